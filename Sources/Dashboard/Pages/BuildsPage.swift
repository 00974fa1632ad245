import Foundation
import Hummingbird
import KbuildCore
import KbuildState

/// `/builds`: every queued, running and finished build across the apps the
/// token reaches, newest first, 100 to a page; `/apps/APP/builds/BUILD`: one
/// build with its inputs and its log, followed live while it runs.
enum BuildsPage {
    static func list(_ ctx: PageContext) async throws -> Response {
        let (page, per) = ctx.page()
        let builds: API.BuildPage = try await ctx.api("/builds?page=\(page)&per=\(per)")
        let rows = builds.builds.map { b -> HTML in
            """
            <tr><th scope="row"><a href="\(ctx.href("/apps/\(b.app)/builds/\(b.build.hex)"))">\(b.build.short)</a></th><td><a href="\(ctx.href("/apps/\(b.app)"))">\(b.app)</a></td>\
            <td class="build-\(b.state.rawValue)">\(b.state.rawValue)</td><td>\(b.requestedBy ?? "–")</td><td>\(Show.time(b.finishedAt ?? b.startedAt ?? b.requestedAt))</td>\
            <td>\(b.worker ?? "–")</td><td>\(b.error ?? "")</td></tr>
            """
        }
        let main: HTML = """
            <h1>Builds</h1>
            \(Layout.table("Queued, running and finished builds, newest first", head: ["Build", "App", "State", "Pushed by", "When", "Worker", "Error"], rows: rows,
                           empty: "No builds yet."))
            \(Layout.pager(ctx, page: page, per: per, total: builds.total))
            """
        return Layout.page("Builds", ctx, watch: ["builds/"], main: main)
    }

    static func one(_ ctx: PageContext, app: String, build: String) async throws -> Response {
        let b: API.BuildInfo = try await ctx.api("/apps/\(app)/builds/\(HTML.query(build))")
        // The releases made from it: the first was built, any later one memoised (same inputs, nothing ran).
        let (releases, _) = try await ctx.paged("/apps/\(app)/releases?page=1&per=1000", as: [API.ReleaseInfo].self)
        let using = releases.filter { $0.build == b.build }.sorted { $0.version < $1.version }
        let uses: HTML = using.isEmpty ? "none (of its newest 1,000 releases)" : HTML.join(using.enumerated().map { i, r in
            "<a href=\"\(ctx.href("/apps/\(app)/releases/\(r.version)"))\">v\(r.version)</a> (\(i == 0 ? "built" : "memoised"))"
        }, ", ")
        let running = b.state == .queued || b.state == .running
        let cancel: HTML = running && ctx.at == nil
            ? Layout.form(ctx, "/apps/\(app)/builds/\(b.build.hex)/cancel", .empty, button: "Cancel build", confirm: true) : ""
        let done: HTML = ctx.query.get("done").map { "<p class=\"done\" role=\"status\">\($0)</p>" } ?? ""
        let logURL = "/apps/\(app)/builds/\(b.build.hex)/log" + (running ? "?follow=1" : "")
        // A finished build's stored log is on the page itself (its last 1 MiB): readable without JavaScript.
        var stored = ""
        if !running, b.log != nil {
            // Read through, keeping only the last 1 MiB (a log may be up to a GiB).
            let response = try await ctx.client.open(.GET, "/apps/\(app)/builds/\(b.build.hex)/log", body: nil, timeout: .seconds(60))
            var tail: [UInt8] = []
            for try await piece in response.body {
                tail.append(contentsOf: piece.readableBytesView)
                if tail.count > 2 << 20 { tail.removeFirst(tail.count - (1 << 20)) }
            }
            stored = String(decoding: tail.suffix(1 << 20), as: UTF8.self)
        }
        let main: HTML = """
            <p><a href="\(ctx.href("/apps/\(app)"))">\(app)</a> · <a href="\(ctx.href("/builds"))">Builds</a></p>
            <h1>Build \(b.build.short)</h1>\(done)
            <dl><dt>State</dt><dd class="build-\(b.state.rawValue)" id="build-state">\(b.state.rawValue)</dd>
            <dt>App</dt><dd>\(app)</dd><dt>Pushed by</dt><dd>\(b.requestedBy ?? "–")</dd><dt>Worker</dt><dd>\(b.worker ?? "–")</dd>
            <dt>Started</dt><dd>\(Show.time(b.startedAt ?? b.requestedAt))</dd><dt>Finished</dt><dd>\(Show.time(b.finishedAt))</dd>
            \(b.error.map { HTML("<dt>Error</dt><dd>\($0)</dd>") } ?? .empty)
            <dt>Build KID</dt><dd><code>\(b.build.description)</code></dd><dt>Source</dt><dd><code>\(b.source.description)</code></dd>
            <dt>Stack</dt><dd>\(b.stack)</dd><dt>Buildpacks</dt><dd>\(b.buildpacks.joined(separator: ", "))</dd>
            <dt>Released as</dt><dd>\(uses)</dd>
            <dt>Log</dt><dd>\(b.log.map { HTML("<code>\($0.description)</code>") } ?? (running ? "live below" : "none"))</dd></dl>
            \(cancel)
            <h2>Log</h2>
            <pre id="log" class="log" data-follow="\(running ? logURL : "")" tabindex="0" aria-live="off">\(running ? "" : stored)</pre>
            <p><a href="\(logURL)">The log as text</a></p>
            """
        return Layout.page("Build \(b.build.short)", ctx, watch: ["builds/"], main: main)
    }
}
