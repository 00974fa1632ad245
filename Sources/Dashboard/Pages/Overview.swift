import Foundation
import Hummingbird
import KbuildCore
import KbuildState

/// `/`: what needs attention first (failed builds, processes crash-looping or
/// unhealthy, reverted or failed releases, silent nodes), then every app with
/// its release, formation and health, 100 to a page.
enum Overview {
    static func render(_ ctx: PageContext) async throws -> Response {
        let (page, per) = ctx.page()
        // The page's apps, the unwell ones across all, every process (the admin's), recent builds and the nodes: asked at once.
        async let listed = ctx.paged("/apps?page=\(page)&per=\(per)", as: [API.AppInfo].self)
        async let unwell: [API.AppInfo] = ctx.api("/apps?rollout=reverted,failed")
        async let recent: API.BuildPage = ctx.api("/builds?per=50")
        async let everyProcess: [API.RunningProcess] = ctx.isAdmin ? ctx.api("/ps") : []
        async let everyNode: [API.NodeInfo] = ctx.isAdmin ? ctx.api("/nodes") : []
        let (shown, total) = try await listed
        // Processes: every app's at once for the admin; an app token asks for each of its apps on the page.
        var processes: [String: [Proc]] = [:]
        if ctx.isAdmin {
            for p in try await everyProcess {
                processes[p.app, default: []].append(Proc(app: p.app, name: p.name, node: p.node, state: p.state ?? "starting", restarts: 0))
            }
        } else {
            for app in shown {
                let list: [API.ProcessInfo] = try await ctx.api("/apps/\(app.name)/ps")
                processes[app.name] = list.map { Proc(app: app.name, name: $0.name, node: $0.node, state: $0.state.rawValue, restarts: $0.restarts) }
            }
        }
        var attention: [HTML] = []
        for b in try await recent.builds where b.state == .failed && (b.finishedAt ?? .distantPast) > Date().addingTimeInterval(-86400) {
            attention.append("<li><a href=\"\(ctx.href("/apps/\(b.app)/builds/\(b.build.hex)"))\">Build \(b.build.short)</a> of \(b.app) failed: \(b.error ?? "see its log")</li>")
        }
        for app in try await unwell {
            attention.append("<li><a href=\"\(ctx.href("/apps/\(app.name)"))\">\(app.name)</a> v\(app.release?.version ?? 0): \(app.release?.status ?? app.rollout?.state.rawValue ?? "")</li>")
        }
        for p in processes.values.joined().sorted(by: { ($0.app, $0.name) < ($1.app, $1.name) })
            where p.state == "unhealthy" || p.state == "backoff" || p.restarts >= 3 {
            let why = p.state == "backoff" ? "crash-looping" : p.state == "unhealthy" ? "unhealthy" : "\(p.restarts) restarts"
            attention.append("<li><a href=\"\(ctx.href("/apps/\(p.app)"))\">\(p.app)</a> \(p.name) on \(p.node): \(why)</li>")
        }
        for node in try await everyNode where !node.alive {
            attention.append("<li><a href=\"\(ctx.href("/nodes"))\">Node \(node.record.name)</a> is silent: last report \(Show.age(node.heartbeat))</li>")
        }
        let rows = shown.map { app -> HTML in
            let ps = processes[app.name] ?? []
            let healthy = ps.filter { $0.state == "healthy" }.count
            let formation = (app.release?.formation ?? [:]).sorted { $0.key < $1.key }.filter { $0.value.quantity > 0 }
                .map { "\($0.key)=\($0.value.quantity)" }.joined(separator: " ")
            let release: HTML = app.release.map { r in
                "<a href=\"\(ctx.href("/apps/\(app.name)/releases/\(r.version)"))\">v\(r.version)</a> \(r.commit.map { Show.short($0, 7) } ?? "") <span class=\"muted\">\(r.status)</span>"
            } ?? "<span class=\"muted\">none</span>"
            return """
                <tr><th scope="row"><a href="\(ctx.href("/apps/\(app.name)"))">\(app.name)</a></th><td>\(release)</td><td>\(formation.isEmpty ? "–" : formation)</td>\
                <td class="\(healthy == ps.count ? "ok" : "warn")">\(healthy)/\(ps.count) healthy</td><td>\(app.rollout?.state.rawValue ?? "–")</td></tr>
                """
        }
        let main: HTML = """
            <h1>Overview</h1>
            <section aria-labelledby="attention-h"><h2 id="attention-h">Needs attention</h2>
            \(attention.isEmpty ? HTML("<p class=\"empty ok\">Nothing: every build, release, process and node is well.</p>") : "<ul class=\"attention\">\(attention)</ul>")
            </section>
            <section aria-labelledby="apps-h"><h2 id="apps-h">Apps</h2>
            \(Layout.table("Every app, its release, formation and health", head: ["App", "Release", "Formation", "Health", "Rollout"], rows: rows,
                           empty: "No apps yet: kbuild apps:create APP, then git push."))
            \(Layout.pager(ctx, page: page, per: per, total: total))
            </section>
            """
        return Layout.page("Overview", ctx, main: main)
    }
}

/// A process as the overview judges it.
struct Proc {
    var app: String
    var name: String
    var node: String
    var state: String
    var restarts: Int
}
