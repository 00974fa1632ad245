import Foundation
import Hummingbird
import KbuildCore
import KbuildState

/// `/apps/APP`: the release timeline (each release with who, why and its
/// status, a link to its diff and a rollback), the processes, config keys
/// (values only on an explicit, recorded "show values"), domains, and the
/// forms that scale, set config, restart and change domains.
enum AppPage {
    static func render(_ ctx: PageContext, app: String) async throws -> Response {
        let (page, per) = ctx.page(per: 50)
        async let infoRead: API.AppInfo = ctx.api("/apps/\(app)")
        async let releasesRead = ctx.paged("/apps/\(app)/releases?page=\(page)&per=\(per)", as: [API.ReleaseInfo].self)
        async let buildsRead: API.BuildPage = ctx.api("/apps/\(app)/builds?per=10")
        // Config keys as of now, names only (the values never reach the page unless asked for).
        async let configRead: API.ConfigAnswer? = ctx.at == nil ? ctx.client.get("/apps/\(app)/config?keys=1") : nil
        async let addonsRead: [API.AddonInfo] = ctx.at == nil ? ctx.api("/apps/\(app)/addons") : []
        async let volumesRead: [API.VolumeInfo] = ctx.at == nil ? ctx.api("/apps/\(app)/volumes") : []
        async let trafficRead: API.RouterTraffic? = ctx.at == nil ? ctx.api("/apps/\(app)/metrics") : nil
        let info = try await infoRead, (shown, total) = try await releasesRead, builds = try await buildsRead
        let keys = try await configRead?.vars.keys.sorted()
        let current = info.release?.version
        let editable = ctx.at == nil
        let releaseRows = shown.map { r -> HTML in
            let rollback: HTML = editable && r.version != current
                ? Layout.form(ctx, "/apps/\(app)/rollback", "<input type=\"hidden\" name=\"version\" value=\"\(r.version)\">",
                              button: "Roll back to v\(r.version)", confirm: true, inline: true)
                : ""
            // A release with the build of the release before it: nothing was built (memoised, or a config or formation change).
            let reused = r.build.map { b in shown.first { $0.version < r.version }?.build == b } ?? false
            let build: HTML = r.build.map { b in
                "<a href=\"\(ctx.href("/apps/\(app)/builds/\(b.hex)"))\">\(b.short)</a>\(reused ? HTML(raw: " <span class=\"muted\">(reused)</span>") : "")"
            } ?? "–"
            return """
                <tr\(r.version == current ? HTML(raw: " class=\"current\"") : "")><th scope="row"><a href="\(ctx.href("/apps/\(app)/releases/\(r.version)"))">v\(r.version)</a></th>\
                <td>\(r.description)</td><td>\(r.createdBy)</td><td>\(Show.time(r.createdAt))</td><td>\(r.commit.map { Show.short($0, 7) } ?? "–")</td>\
                <td>\(build)</td><td>\(r.status)</td><td>\(rollback)</td></tr>
                """
        }
        let processRows = info.processes.sorted { $0.name < $1.name }.map { p -> HTML in
            """
            <tr><th scope="row">\(p.name)</th><td class="state-\(p.state.rawValue)">\(p.state.rawValue)</td><td>\(p.node)</td>\
            <td>\(p.hostPID.map { String($0) } ?? "–")</td><td>\(p.restarts)</td><td>\(p.release.map { "v\($0)" } ?? "–")</td><td>\(Show.time(p.since))</td></tr>
            """
        }
        let buildRows = builds.builds.map { b -> HTML in
            "<li><a href=\"\(ctx.href("/apps/\(app)/builds/\(b.build.hex)"))\">\(b.build.short)</a> \(b.state.rawValue) \(Show.time(b.finishedAt ?? b.requestedAt))</li>"
        }
        let types = (info.release?.formation ?? [:]).keys.sorted()
        let scale: HTML = editable && !types.isEmpty ? Layout.form(ctx, "/apps/\(app)/scale", """
            <label>Type <select name="type">\(types.map { HTML("<option>\($0)</option>") })</select></label>
            <label>Count <input name="quantity" type="number" min="0" max="100" required value="1"></label>
            """, button: "Scale") : ""
        let restart: HTML = editable && !types.isEmpty ? Layout.form(ctx, "/apps/\(app)/restart", """
            <label>Type <select name="type"><option value="">every type</option>\(types.map { HTML("<option>\($0)</option>") })</select></label>
            """, button: "Restart") : ""
        let config: HTML
        if let keys {
            let rows = keys.map { key -> HTML in
                "<tr><th scope=\"row\"><code>\(key)</code></th><td class=\"muted\">hidden</td><td>\(Layout.form(ctx, "/apps/\(app)/config/unset", "<input type=\"hidden\" name=\"key\" value=\"\(key)\">", button: "Unset", confirm: true, inline: true))</td></tr>"
            }
            config = """
                \(Layout.table("Config keys (values hidden)", head: ["Key", "Value", ""], rows: rows, empty: "No config vars."))
                \(keys.isEmpty ? HTML.empty : Layout.form(ctx, "/apps/\(app)/config/reveal", .empty, button: "Show values (recorded)"))
                \(Layout.form(ctx, "/apps/\(app)/config", """
                    <label>Key <input name="key" required pattern="[A-Za-z_][A-Za-z0-9_]*" autocomplete="off"></label>
                    <label>Value <input name="value" autocomplete="off"></label>
                    """, button: "Set"))
                """
        } else {
            config = "<p class=\"muted\">Config is shown as of now only.</p>"
        }
        let domains: HTML = HTML.join(info.domains.map { d in
            "<li>\(d) \(editable ? Layout.form(ctx, "/apps/\(app)/domains/remove", "<input type=\"hidden\" name=\"domain\" value=\"\(d)\">", button: "Remove", confirm: true, inline: true) : .empty)</li>"
        })
        let data = try await dataSection(ctx, app: app, addons: try await addonsRead, volumes: try await volumesRead)
        let traffic = Self.traffic(try await trafficRead)
        let done: HTML = ctx.query.get("done").map { "<p class=\"done\" role=\"status\">\($0)</p>" } ?? ""
        let main: HTML = """
            <h1>\(app)</h1>\(done)
            <p>Release \(current.map { "v\($0)" } ?? "none") · stack \(info.stack) · deploys branch \(info.deployBranch) · \
            rollout \(info.rollout?.state.rawValue ?? "–") · <a href="\(ctx.href("/apps/\(app)/logs"))">Logs</a></p>
            <section aria-labelledby="ps-h"><h2 id="ps-h">Processes</h2>
            \(Layout.table("Processes of \(app)", head: ["Process", "State", "Node", "Host PID", "Restarts", "Release", "Since"], rows: processRows, empty: "No processes run."))
            \(scale)\(restart)</section>
            \(traffic)
            <section aria-labelledby="rel-h"><h2 id="rel-h">Releases</h2>
            \(Layout.table("Releases of \(app), newest first", head: ["Release", "Change", "By", "When", "Commit", "Build", "Status", ""], rows: Array(releaseRows), empty: "No releases yet: git push."))
            \(Layout.pager(ctx, page: page, per: per, total: total))
            </section>
            <section aria-labelledby="builds-h"><h2 id="builds-h">Builds</h2>
            \(buildRows.isEmpty ? HTML("<p class=\"empty\">No builds yet.</p>") : "<ul>\(buildRows)</ul>")
            <p><a href="\(ctx.href("/builds"))">Every build</a></p></section>
            <section aria-labelledby="config-h"><h2 id="config-h">Config</h2>\(config)</section>
            \(data)
            <section aria-labelledby="domains-h"><h2 id="domains-h">Domains</h2>
            \(info.domains.isEmpty ? HTML("<p class=\"empty\">No custom domains (it serves as \(app).localhost).</p>") : "<ul>\(domains)</ul>")
            \(editable ? Layout.form(ctx, "/apps/\(app)/domains", "<label>Domain <input name=\"domain\" required autocomplete=\"off\"></label>", button: "Add domain") : .empty)
            </section>
            """
        // Its processes are in the nodes' reports: a restart or a move shows as a change of a node's status.
        return Layout.page(app, ctx, watch: ["apps/\(app)/", "builds/", "nodes/"], main: main)
    }

    /// Its add-ons (with their latest backup, flagged when it is not verified) and volumes (now only: they are not
    /// read at a past revision).
    /// The router's figures for the app: responses by status class and latency percentiles over the last minutes.
    static func traffic(_ traffic: API.RouterTraffic?) -> HTML {
        guard let traffic else { return "" }
        func ms(_ value: Double?) -> String { value.map { $0 < 10 ? String(format: "%.1f ms", $0) : "\(Int($0.rounded())) ms" } ?? "–" }
        let classes = ["2xx", "3xx", "4xx", "5xx"].map { c -> HTML in "<td>\(traffic.recent[c].map { String($0) } ?? "0")</td>" }
        let body: HTML = traffic.recent.isEmpty
            ? "<p class=\"empty\">No requests in the last \(traffic.windowMinutes) minutes.</p>"
            : """
                <table><caption>Requests through the router, last \(traffic.windowMinutes) minutes</caption>
                <thead><tr><th scope="col">2xx</th><th scope="col">3xx</th><th scope="col">4xx</th><th scope="col">5xx</th>\
                <th scope="col">p50</th><th scope="col">p95</th><th scope="col">p99</th></tr></thead>
                <tbody><tr>\(classes)<td>\(ms(traffic.p50))</td><td>\(ms(traffic.p95))</td><td>\(ms(traffic.p99))</td></tr></tbody></table>
                """
        return """
            <section aria-labelledby="traffic-h"><h2 id="traffic-h">Traffic</h2>\(body)
            <p class="muted">\(traffic.total) requests since the router started; router lines in the logs as <code>router</code>.</p></section>
            """
    }

    static func dataSection(_ ctx: PageContext, app: String, addons: [API.AddonInfo], volumes: [API.VolumeInfo]) async throws -> HTML {
        guard ctx.at == nil else { return "<section aria-labelledby=\"data-h\"><h2 id=\"data-h\">Add-ons and volumes</h2><p class=\"muted\">Shown as of now only.</p></section>" }
        var addonRows: [HTML] = []
        for a in addons.sorted(by: { $0.record.name < $1.record.name }) {
            let backups: [BackupRecord] = (try? await ctx.api("/apps/\(app)/addons/\(HTML.query(a.record.name))/backups")) ?? []
            let latest = backups.max { $0.id < $1.id }
            let backup: HTML = latest.map { b in
                let ok = b.state.rawValue == "verified"
                return "<span class=\"\(ok ? "ok" : "warn")\">\(b.id) \(b.state.rawValue)\(b.error.map { ": \($0)" } ?? "")</span>"
            } ?? "<span class=\"muted\">none</span>"
            addonRows.append("""
                <tr><th scope="row">\(a.record.name)</th><td>\(a.record.addon.rawValue) \(a.record.version)</td><td>\(a.state)</td><td>\(a.node ?? "–")</td>\
                <td>\(a.record.owner == app ? "its own" : "attached, \(a.record.owner)'s")</td><td>\(a.record.schedule.map { "daily at \($0.description)" } ?? "–")</td><td>\(backup)</td></tr>
                """)
        }
        let volumeRows = volumes.sorted { $0.record.name < $1.record.name }.map { v -> HTML in
            let mounts = v.mounts.map { "\($0.path)" + ($0.types.map { " (\($0.joined(separator: ", ")))" } ?? "") }.joined(separator: "; ")
            return """
                <tr><th scope="row">\(v.record.name)</th><td>\(formatBytes(v.record.size))</td><td>\(v.used.map(formatBytes) ?? "–")</td><td>\(v.record.node)</td>\
                <td>\(v.state)\(v.error.map { ": \($0)" } ?? "")</td><td>\(mounts.isEmpty ? "–" : mounts)</td></tr>
                """
        }
        return """
            <section aria-labelledby="data-h"><h2 id="data-h">Add-ons and volumes</h2>
            \(Layout.table("Add-ons of \(app)", head: ["Add-on", "Kind", "State", "Node", "Whose", "Backups", "Latest backup"], rows: addonRows, empty: "No add-ons."))
            \(Layout.table("Volumes of \(app)", head: ["Volume", "Size", "Used", "Node", "State", "Mounted at"], rows: volumeRows, empty: "No volumes."))
            </section>
            """
    }

    static func formatBytes(_ n: UInt64) -> String {
        n >= 1 << 30 ? String(format: "%.1fG", Double(n) / Double(1 << 30)) : n >= 1 << 20 ? "\(n >> 20)M" : "\(n >> 10)K"
    }

    /// `/apps/APP/releases/N`: one release and what it changed from the one before.
    static func release(_ ctx: PageContext, app: String, version text: String) async throws -> Response {
        guard let version = Int64(text.hasPrefix("v") ? String(text.dropFirst()) : text), version > 0 else {
            throw KbuildError(.invalidArgument, "invalid release \(text.debugQuoted): want vN")
        }
        let r: API.ReleaseInfo = try await ctx.api("/apps/\(app)/releases/\(version)")
        var diff: HTML = "<p class=\"muted\">v1 is the first release: nothing before it to compare.</p>"
        if version > 1 {
            do {
                diff = render(try await ctx.api("/apps/\(app)/releases/\(version)/diff"), from: version - 1)
            } catch let error as KbuildError {
                // The release is still shown: only its comparison is missing (a source gc has dropped, say).
                diff = "<h2>What changed from v\(version - 1)</h2><p class=\"error\" role=\"alert\">The diff could not be made: \(error.message)</p>"
            }
        }
        let rollback: HTML = ctx.at == nil
            ? Layout.form(ctx, "/apps/\(app)/rollback", "<input type=\"hidden\" name=\"version\" value=\"\(version)\">", button: "Roll back to v\(version)", confirm: true)
            : ""
        let main: HTML = """
            <p><a href="\(ctx.href("/apps/\(app)"))">\(app)</a></p>
            <h1>\(app) v\(version)</h1>
            <dl><dt>Change</dt><dd>\(r.description)</dd><dt>By</dt><dd>\(r.createdBy)</dd><dt>When</dt><dd>\(Show.time(r.createdAt))</dd>
            <dt>Status</dt><dd>\(r.status.isEmpty ? "–" : r.status)</dd><dt>Commit</dt><dd><code>\(r.commit ?? "–")</code></dd>
            \(r.message.map { HTML("<dt>Message</dt><dd class=\"message\">\($0)</dd>") } ?? .empty)\(r.author.map { HTML("<dt>Author</dt><dd>\($0)</dd>") } ?? .empty)
            <dt>Image</dt><dd><code>\(r.image.description)</code></dd><dt>Release KID</dt><dd><code>\(r.kid.description)</code></dd></dl>
            \(ctx.isAdmin ? HTML("<p><a href=\"\(ctx.href("/trace?q=\(HTML.query("\(app)@v\(version)"))"))\">Trace v\(version)</a></p>") : .empty)
            \(rollback)\(diff)
            """
        return Layout.page("\(app) v\(version)", ctx, watch: ["apps/\(app)/"], main: main)
    }

    /// What a release changed from `from`: commits, files, stack, buildpacks, config keys (values hidden), the patch.
    static func render(_ d: ReleaseDiff, from: Int64) -> HTML {
        let files = d.files.prefix(500).map { f -> HTML in "<li><span class=\"change-\(f.change)\">\(f.change)</span> <code>\(f.path)</code></li>" }
        let keys = d.configAdded.map { HTML("<li>added <code>\($0)</code></li>") } + d.configRemoved.map { HTML("<li>removed <code>\($0)</code></li>") }
            + d.configChanged.map { HTML("<li>changed <code>\($0)</code></li>") }
        return """
            <h2>What changed from v\(from)</h2>
            <h3>Commits</h3>\(d.commits.isEmpty ? HTML("<p class=\"empty\">None.</p>") : "<ul>\(d.commits.map { HTML("<li><code>\($0)</code></li>") })</ul>")
            <h3>Files</h3>\(files.isEmpty ? HTML("<p class=\"empty\">None.</p>") : "<ul>\(Array(files))</ul>")
            <h3>Stack</h3><p>\(d.stack.joined(separator: " → "))</p>
            <h3>Buildpacks</h3><p>\(d.buildpacks.map { $0.joined(separator: ", ") }.joined(separator: " → "))</p>
            <h3>Config keys (values hidden)</h3>\(keys.isEmpty ? HTML("<p class=\"empty\">None.</p>") : "<ul>\(keys)</ul>")
            \(d.patch.isEmpty ? HTML.empty : "<details><summary>Patch</summary><pre>\(d.patch)</pre></details>")
            """
    }

    /// The config's values, shown once on purpose (the API recorded who asked).
    static func revealed(_ ctx: PageContext, app: String, vars: [String: String]) -> Response {
        let rows = vars.sorted { $0.key < $1.key }.map { HTML("<tr><th scope=\"row\"><code>\($0.key)</code></th><td><code>\($0.value)</code></td></tr>") }
        let main: HTML = """
            <p><a href="/apps/\(app)">\(app)</a></p><h1>Config values of \(app)</h1>
            <p class="done" role="status">Shown to \(ctx.who); this showing is recorded in \(app)'s history.</p>
            \(Layout.table("Config of \(app)", head: ["Key", "Value"], rows: rows, empty: "No config vars."))
            """
        return Layout.page("\(app) config", ctx, main: main)
    }
}
