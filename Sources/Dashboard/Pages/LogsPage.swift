import Foundation
import Hummingbird
import KbuildCore
import KbuildState

/// `/apps/APP/logs`: the app's merged logs, searched on the server (`q`),
/// filtered by process (`ps`) and release, 200 lines to a page from the
/// newest; live lines are appended while the first page is shown.
enum LogsPage {
    static let perPage = 200
    /// How far back search and paging reach (the API's largest tail).
    static let window = 100_000

    static func render(_ ctx: PageContext, app: String) async throws -> Response {
        let q = ctx.query
        let search = q.get("q") ?? ""
        let ps = q.get("ps") ?? ""
        let release = q.get("release") ?? ""
        let (page, per) = ctx.page(per: perPage)
        // Without a search only the lines up to this page are read; a search reads the whole window.
        let reach = search.isEmpty ? min(window, page * per + 1) : window
        var path = "/logs?lines=\(reach)"
        if !ps.isEmpty { path += "&ps=\(HTML.query(ps))" }
        if !release.isEmpty { path += "&release=\(HTML.query(release))" }
        let response = try await ctx.client.open(.GET, "/apps/\(app)\(path)", body: nil, timeout: .seconds(60))
        let text = String(buffer: try await response.body.collect(upTo: 256 << 20))
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        if !search.isEmpty { lines = lines.filter { $0.range(of: search, options: .caseInsensitive) != nil } }
        // Newest last on the page, pages counting back from the newest.
        let end = max(0, lines.count - (page - 1) * per)
        let shown = lines[max(0, end - per)..<end]
        let live = page == 1 && search.isEmpty && ctx.at == nil
        var stream = "/apps/\(app)/logs/stream"
        var filters: [String] = []
        if !ps.isEmpty { filters.append("ps=\(HTML.query(ps))") }
        if !release.isEmpty { filters.append("release=\(HTML.query(release))") }
        if !filters.isEmpty { stream += "?" + filters.joined(separator: "&") }
        let body = HTML.join(shown.map { HTML("\(String($0))\n") })
        let main: HTML = """
            <p><a href="\(ctx.href("/apps/\(app)"))">\(app)</a></p>
            <h1>Logs of \(app)</h1>
            \(ctx.at == nil ? HTML.empty : "<p class=\"muted\">Logs are files, not part of the ref store's history: these lines are as of now.</p>")
            <form method="get" action="/apps/\(app)/logs" role="search" class="filters">
            <label>Search <input name="q" value="\(search)" type="search"></label>
            <label>Process <input name="ps" value="\(ps)" placeholder="web.1"></label>
            <label>Release <input name="release" value="\(release)" placeholder="v3"></label>
            <button type="submit">Filter</button></form>
            <p class="count">\(search.isEmpty ? "Newest lines" : "\(lines.count) matching line\(lines.count == 1 ? "" : "s") for “\(search)” (in the last \(window))")\
             · <a href="/apps/\(app)/logs/download">Download every line</a></p>
            <pre id="log" class="log" tabindex="0" data-follow="\(live ? stream : "")">\(body)</pre>
            \(search.isEmpty ? older(ctx, page: page, more: lines.count > page * per) : Layout.pager(ctx, page: page, per: per, total: lines.count))
            """
        return Layout.page("Logs of \(app)", ctx, watch: ["apps/\(app)/processes"], main: main)
    }

    /// Newer and older pages when the total is not known (only the lines up to this page were read).
    static func older(_ ctx: PageContext, page: Int, more: Bool) -> HTML {
        let newer: HTML = page > 1 ? "<a rel=\"prev\" href=\"\(ctx.link(page: page - 1))\">Newer</a>" : ""
        let older: HTML = more ? "<a rel=\"next\" href=\"\(ctx.link(page: page + 1))\">Older</a>" : ""
        return "<nav class=\"pager\" aria-label=\"Pages\">\(newer) <span>Page \(page)</span> \(older)</nav>"
    }
}
