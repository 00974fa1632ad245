import Foundation
import Hummingbird
import KbuildCore
import KbuildState

/// `/trace?q=…` (the admin's): one box that takes anything `kbuild trace`
/// takes (a PID, a KID or prefix, APP@vN, a commit, a request id) and shows
/// the chain from the process to the commit; `&file=PATH` shows a file of
/// the pushed source the subject came from.
enum TracePage {
    static func render(_ ctx: PageContext) async throws -> Response {
        let q = (ctx.query.get("q") ?? "").trimmingCharacters(in: .whitespaces)
        var result: HTML = ""
        if !q.isEmpty {
            if let file = ctx.query.get("file"), !file.isEmpty {
                let response = try await ctx.client.open(.GET, "/trace/file?target=\(HTML.query(q))&path=\(HTML.query(file))", body: nil, timeout: .seconds(60))
                let bytes = try await response.body.collect(upTo: 4 << 20)
                result = "<h2><code>\(file)</code> as pushed</h2><pre class=\"file\">\(String(buffer: bytes))</pre>"
            } else {
                let t: TraceResult = try await ctx.api("/trace?target=\(HTML.query(q))")
                result = chain(ctx, t, query: q)
            }
        }
        let main: HTML = """
            <h1>Trace</h1>
            <form method="get" action="/trace" role="search"><label for="q">PID, KID, APP@vN, commit or request id</label>
            <input id="q" name="q" value="\(q)" required spellcheck="false">\(ctx.at.map { HTML("<input type=\"hidden\" name=\"at\" value=\"\($0)\">") } ?? .empty)
            <button type="submit">Trace</button></form>
            \(result)
            """
        return Layout.page("Trace", ctx, main: main)
    }

    static func chain(_ ctx: PageContext, _ t: TraceResult, query: String) -> HTML {
        var items: [HTML] = []
        if let p = t.up.process {
            items.append("<li><strong>Process</strong> \(p.record.app) \(p.record.name) on \(p.record.node) · <code>\(p.kid.description)</code> \(p.state ?? "")</li>")
        }
        if let r = t.up.release {
            items.append("<li><strong>Release</strong> <a href=\"\(ctx.href("/apps/\(r.app)/releases/\(r.version)"))\">\(r.app) v\(r.version)</a> \(r.description) by \(r.createdBy) · <code>\(r.kid.description)</code></li>")
        }
        if let b = t.up.build {
            items.append("<li><strong>Build</strong> <a href=\"\(ctx.href("/apps/\(t.up.release?.app ?? "")/builds/\(b.build.hex)"))\">\(b.build.short)</a> on \(b.stack) with \(b.buildpacks.joined(separator: ", "))</li>")
        }
        if let s = t.up.source {
            items.append("""
                <li><strong>Commit</strong> <code>\(s.commit)</code> by \(s.author) &lt;\(s.email)&gt;: \(s.message)<br>\
                pushed by \(s.pushedBy) \(Show.time(s.pushedAt)) to \(s.repository) \(s.ref) · source <code>\(s.source.description)</code>
                <form method="get" action="/trace" class="inline"><input type="hidden" name="q" value="\(query)">\
                <label>File <input name="file" placeholder="Procfile"></label><button type="submit">Show</button></form></li>
                """)
        }
        let releases = t.releases.map { r in HTML("<li><a href=\"\(ctx.href("/apps/\(r.app)/releases/\(r.version)"))\">\(r.app) v\(r.version)</a></li>") }
        let processes = t.processes.map { p in HTML("<li>\(p.record.app) \(p.record.name) on \(p.record.node) \(p.state ?? "")</li>") }
        return """
            <h2>\(t.subject)</h2>
            \(items.isEmpty ? HTML("<p class=\"empty\">No chain up from it.</p>") : "<ol class=\"chain\">\(items)</ol>")
            \(releases.isEmpty ? HTML.empty : "<h3>Releases with it</h3><ul>\(releases)</ul>")
            \(processes.isEmpty ? HTML.empty : "<h3>Processes running it</h3><ul>\(processes)</ul>")
            """
    }
}
