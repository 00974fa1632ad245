import Foundation
import Hummingbird
import HTTPTypes
import NIOCore

/// The frame of every page: the navigation, the live or as-of banner, the
/// page's own `<main>`, and the changes the event stream has brought.
enum Layout {
    /// `watch`: ref name prefixes whose changes re-render this page's `<main>` (empty: every change).
    static func page(_ title: String, _ ctx: PageContext, watch: [String] = [], main: HTML) -> Response {
        let banner: HTML
        if let at = ctx.at {
            banner = """
                <p id="live" class="past" role="status">As of revision <span id="revision">\(at)</span>, read from kbuild's history. \
                <a href="\(ctx.pathNow)">Back to now</a></p>
                """
        } else {
            banner = """
                <p id="live" role="status" aria-live="polite"><span class="dot" aria-hidden="true"></span> \
                <span id="livetext">Live at revision</span> <span id="revision">\(ctx.revision)</span></p>
                """
        }
        let nav: HTML = ctx.isAdmin
            ? "<li><a href=\"/\">Overview</a></li><li><a href=\"/builds\">Builds</a></li><li><a href=\"/nodes\">Nodes</a></li><li><a href=\"/trace\">Trace</a></li>"
            : "<li><a href=\"/\">Overview</a></li><li><a href=\"/builds\">Builds</a></li>"
        let body: HTML = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title) · kbuild</title><link rel="stylesheet" href="/static/kbuild.css"><script src="/static/kbuild.js" defer></script></head>
            <body data-revision="\(ctx.at ?? ctx.revision)" data-live="\(ctx.at == nil ? "1" : "0")" data-watch="\(watch.joined(separator: " "))" data-csrf="\(ctx.csrf)">
            <a class="skip" href="#main">Skip to content</a>
            <header><nav aria-label="Main"><ul><li class="brand"><a href="/">kbuild</a></li>\(nav)</ul>
            <form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" value="\(ctx.csrf)">\
            <span class="who">\(ctx.who)</span> <button type="submit">Log out</button></form></nav>
            \(banner)</header>
            <main id="main">
            \(main)
            </main>
            <aside aria-labelledby="changes-h"><h2 id="changes-h">Changes since this page loaded</h2>
            <p class="hint">Each links to the state as of its revision.</p><ol id="changes" reversed></ol></aside>
            </body></html>
            """
        return html(body)
    }

    static func html(_ body: HTML, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        // Only kbuild's own scripts and styles, no framing, no sniffing.
        headers[HTTPField.Name("Content-Security-Policy")!] = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body.text)))
    }

    /// A page that says what went wrong (no session needed: it shows nothing else).
    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        html("""
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(status.code) \(status.reasonPhrase) · kbuild</title><link rel="stylesheet" href="/static/kbuild.css"></head>
            <body><header><nav aria-label="Main"><ul><li class="brand"><a href="/">kbuild</a></li></ul></nav></header>
            <main id="main"><h1>\(status.code) \(status.reasonPhrase)</h1><p class="error" role="alert">\(message)</p>
            <p><a href="/">Overview</a> · <a href="/login">Log in</a></p></main></body></html>
            """, status: status)
    }

    static func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location])
    }

    /// A page's table of rows, or a line saying there are none.
    static func table(_ caption: String, head: [String], rows: [HTML], empty: String) -> HTML {
        guard !rows.isEmpty else { return "<p class=\"empty\">\(empty)</p>" }
        let ths = HTML.join(head.map { "<th scope=\"col\">\($0)</th>" })
        return "<table><caption>\(caption)</caption><thead><tr>\(ths)</tr></thead><tbody>\(rows)</tbody></table>"
    }

    /// Links to the pages of a list: previous, "page N of M", next.
    static func pager(_ ctx: PageContext, page: Int, per: Int, total: Int) -> HTML {
        let pages = max(1, (total + per - 1) / per)
        guard pages > 1 else { return "<p class=\"count\">\(total) in all</p>" }
        let prev: HTML = page > 1 ? "<a rel=\"prev\" href=\"\(ctx.link(page: page - 1))\">Previous</a>" : ""
        let next: HTML = page < pages ? "<a rel=\"next\" href=\"\(ctx.link(page: page + 1))\">Next</a>" : ""
        return "<nav class=\"pager\" aria-label=\"Pages\">\(prev) <span>Page \(page) of \(pages) (\(total) in all)</span> \(next)</nav>"
    }

    /// A form that posts to `action` with the session's CSRF token.
    static func form(_ ctx: PageContext, _ action: String, _ fields: HTML, button: String, confirm: Bool = false, inline: Bool = false) -> HTML {
        let sure: HTML = confirm ? "<label class=\"confirm\"><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> I am sure</label>" : ""
        return """
            <form method="post" action="\(action)"\(inline ? HTML(raw: " class=\"inline\"") : "")><input type="hidden" name="csrf" value="\(ctx.csrf)">\
            \(fields)\(sure)<button type="submit">\(button)</button></form>
            """
    }
}
