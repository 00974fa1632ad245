import Foundation
import Hummingbird
import KbuildCore
import KbuildState

/// `/nodes` (the admin's): each node with its capacity, what its processes
/// use, how many run there, and how long ago it last reported.
enum NodesPage {
    static func render(_ ctx: PageContext) async throws -> Response {
        let nodes: [API.NodeInfo] = try await ctx.api("/nodes")
        let processes: [API.RunningProcess] = try await ctx.api("/ps")
        let rows = nodes.sorted { $0.record.name < $1.record.name }.map { n -> HTML in
            let here = processes.filter { $0.node == n.record.name }
            let list = here.prefix(50).map { "\($0.app) \($0.name)" }.joined(separator: ", ")
            return """
                <tr><th scope="row">\(n.record.name)</th><td class="\(n.alive ? "ok" : "warn")">\(n.alive ? (n.draining ? "draining" : "reporting") : "silent")</td>\
                <td>\(n.record.address)</td><td>\(n.record.capacity.description)</td><td>\(n.processes)</td><td>\(list)</td>\
                <td>\(Show.age(n.heartbeat))</td></tr>
                """
        }
        let main: HTML = """
            <h1>Nodes</h1>
            \(Layout.table("Every node", head: ["Node", "State", "Address", "Capacity", "Processes", "Running", "Last report"], rows: rows,
                           empty: "No node has registered (kbuild up runs one; kbuild agent joins more)."))
            """
        return Layout.page("Nodes", ctx, watch: ["nodes/"], main: main)
    }
}
