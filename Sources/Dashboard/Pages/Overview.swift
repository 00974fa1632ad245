import Foundation
import Hummingbird
import KbuildCore
import KbuildState

/// `/`: what needs attention first (failed builds, processes crash-looping or
/// unhealthy, reverted or failed releases, silent nodes), then every app with
/// its release, formation and health, 100 to a page.
enum Overview {
    static func render(_ ctx: PageContext) async throws -> Response {
        let apps: [API.AppInfo] = try await ctx.api("/apps")
        let (page, per) = ctx.page()
        let shown = Array(apps.dropFirst((page - 1) * per).prefix(per))
        // Processes: every app's at once for the admin; an app token asks for each of its apps.
        var processes: [String: [Proc]] = [:]
        if ctx.isAdmin {
            let running: [API.RunningProcess] = try await ctx.api("/ps")
            for p in running {
                processes[p.app, default: []].append(Proc(name: p.name, node: p.node, state: p.state ?? "starting", restarts: 0))
            }
        } else {
            for app in apps {
                let list: [API.ProcessInfo] = try await ctx.api("/apps/\(app.name)/ps")
                processes[app.name] = list.map { Proc(name: $0.name, node: $0.node, state: $0.state.rawValue, restarts: $0.restarts) }
            }
        }
        var attention: [HTML] = []
        let builds: API.BuildPage = try await ctx.api("/builds?per=50")
        for b in builds.builds where b.state == .failed && (b.finishedAt ?? .distantPast) > Date().addingTimeInterval(-86400) {
            attention.append("<li><a href=\"\(ctx.href("/apps/\(b.app)/builds/\(b.build.hex)"))\">Build \(b.build.short)</a> of \(b.app) failed: \(b.error ?? "see its log")</li>")
        }
        for app in apps {
            let status = app.release?.status ?? ""
            if status.hasPrefix("reverted") || status.hasPrefix("failed") {
                attention.append("<li><a href=\"\(ctx.href("/apps/\(app.name)"))\">\(app.name)</a> v\(app.release?.version ?? 0): \(status)</li>")
            }
            for p in processes[app.name] ?? [] where p.state == "unhealthy" || p.state == "backoff" || p.restarts >= 3 {
                let why = p.state == "backoff" ? "crash-looping" : p.state == "unhealthy" ? "unhealthy" : "\(p.restarts) restarts"
                attention.append("<li><a href=\"\(ctx.href("/apps/\(app.name)"))\">\(app.name)</a> \(p.name) on \(p.node): \(why)</li>")
            }
        }
        if ctx.isAdmin {
            let nodes: [API.NodeInfo] = try await ctx.api("/nodes")
            for node in nodes where !node.alive {
                attention.append("<li><a href=\"\(ctx.href("/nodes"))\">Node \(node.record.name)</a> is silent: last report \(Show.age(node.heartbeat))</li>")
            }
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
            \(Layout.pager(ctx, page: page, per: per, total: apps.count))
            </section>
            """
        return Layout.page("Overview", ctx, main: main)
    }
}

/// A process as the overview judges it.
struct Proc {
    var name: String
    var node: String
    var state: String
    var restarts: Int
}
