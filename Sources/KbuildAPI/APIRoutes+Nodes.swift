import Hummingbird
import Cluster
import Foundation
import KbuildCore
import KbuildServer
import KbuildState

/// Nodes and build workers: the list (readable at a past revision), join
/// tokens, drain and undrain. The admin's only: an app or node token never
/// reaches /nodes or /workers (the token check's rules).
extension APIRoutes {
    func registerNodes(on router: Router<Context>) {
        let p = API.prefix
        // A node's join token (admin only: an app token never reaches /nodes).
        router.post("\(p)/nodes/:node/join-token") { r, c in
            try await self.answer {
                let node = c.parameters.get("node") ?? ""
                let body = try await self.decode(API.JoinRequest.self, r, c)
                let token = try await AppTokens(keg: self.keg, refs: self.refs).createJoin(node: node, address: body.address, actor: self.actor(r))
                let via = self.joinVia()
                return API.JoinToken(node: node, token: token, url: via?.url, caHash: via?.caHash)
            }
        }
        // A build worker's join token (admin only).
        router.post("\(p)/workers/:worker/join-token") { r, c in
            try await self.answer {
                let worker = c.parameters.get("worker") ?? ""
                let token = try await AppTokens(keg: self.keg, refs: self.refs).createWorkerJoin(worker: worker, actor: self.actor(r))
                let via = self.joinVia()
                return API.WorkerJoinToken(worker: worker, token: token, url: via?.url, caHash: via?.caHash)
            }
        }
        router.get("\(p)/nodes") { r, _ in
            try await self.answer {
                let view = try await self.viewing(r)
                // Alive as of then: at a past revision, judged by the time of that revision's change.
                let now = try await view.time(of: r)
                let drained = try await view.reader.drainedNodes()
                return try await view.reader.nodes().map { n in
                    API.NodeInfo(record: n.record, alive: n.record.isAlive(reporting: n.status, at: now),
                                 processes: n.status?.processes.count ?? 0, heartbeat: n.status?.at, draining: drained.contains(n.record.name))
                }
            }
        }
        // nodes:drain and nodes:undrain (admin only: an app or node token never reaches /nodes).
        router.post("\(p)/nodes/:node/drain") { r, c in
            try await self.answer { () -> DrainRecord in
                let node = c.parameters.get("node") ?? ""
                guard try await self.reader.nodes().contains(where: { $0.record.name == node }) else {
                    throw KbuildError(.notFound, "no node \(node.debugQuoted) has registered (kbuild nodes lists them)")
                }
                let record = DrainRecord(node: node, by: self.actor(r))
                try await self.refs.set(try Schema.drain(node), to: try await Records.put(record, in: self.keg), actor: self.actor(r))
                return record
            }
        }
        router.delete("\(p)/nodes/:node/drain") { r, c in
            try await self.answer { () -> [String: String] in
                let node = c.parameters.get("node") ?? ""
                let name = try Schema.drain(node)
                guard let current = try await self.refs.get(name) else { throw KbuildError(.notFound, "node \(node) is not drained") }
                try await self.refs.compareAndSwap(name, to: nil, expecting: .value(current.kid), actor: self.actor(r))
                return ["undrained": node]
            }
        }
    }
}
