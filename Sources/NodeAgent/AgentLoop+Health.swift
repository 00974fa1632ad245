import Cluster
import KbuildCore
import Releases
import Sandbox
import Foundation
import KbuildState

// The node agent's health checks and the CPU limit that follows them.
extension AgentLoop {
    /// How long a starting process may use the node's idle CPU beyond its limit.
    static let bootBurst: Duration = .seconds(10)

    /// A process's first start is without its CPU limit (interpreters and
    /// frameworks import most of their code at start: under a 0.5 CPU limit
    /// gunicorn and Flask took four times as long to answer), and it gets
    /// the limit once it is healthy or its boot burst is over, whichever is
    /// first. A restart after a crash, a process taken over from an earlier
    /// agent and one being stopped are held to it at once.
    func throttleBooted() {
        let now = ContinuousClock.now
        for (id, var e) in table where !e.throttled {
            guard let process = e.process else { continue }
            let burst = e.restarts == 0 && !e.adopted && e.state == .starting && now - e.startedAt < AgentLoop.bootBurst
            guard !burst else { continue }
            do {
                try process.setCPULimit(e.assigned.spec.cpus)
                e.throttled = true
                table[id] = e
            } catch {
                // Said once; tried again on every pass.
                if !e.throttleFailed { agent.log("agent \(config.name): \(id): \(error)") }
                e.throttleFailed = true
                table[id] = e
            }
        }
    }

    func checkHealth() async {
        let now = ContinuousClock.now
        let due = table.values.filter { e in e.process != nil && (e.state == .starting || e.state == .healthy || e.state == .unhealthy) && now >= e.nextCheck }
        let results = await withTaskGroup(of: (String, Bool).self) { group in
            for e in due {
                let check = e.assigned.spec.health
                let (id, address, port) = (e.assigned.id, address(of: e.link), e.port)
                // Ready by HTTP: a web process's first seconds, started by this agent (see below).
                let byHTTP = e.state == .starting && !e.adopted && e.assigned.spec.type == "web" && now - e.startedAt < AgentLoop.bootBurst
                group.addTask {
                    // Without a check (non-web types), a process is healthy once it has run for a second.
                    guard let check else { return (id, ContinuousClock.now - e.startedAt >= .seconds(1)) }
                    // A web process without a path of its own is ready once it answers a request at all:
                    // gunicorn, puma and their kin bind the port before their workers can answer, so a
                    // connect alone would send traffic (and retire the old process) seconds early. A server
                    // that says nothing to a GET / is ready by connect after the first 10 s. Then it is live
                    // while its port accepts connections, with no request in its log every 2 s.
                    if byHTTP, check.path == nil {
                        return (id, await HealthProbe.check(host: address, port: port, check: check, answersRequest: "/"))
                    }
                    return (id, await HealthProbe.check(host: address, port: port, check: check))
                }
            }
            var out: [(String, Bool)] = []
            for await r in group { out.append(r) }
            return out
        }
        for (id, ok) in results {
            guard var e = table[id], e.state != .stopping else { continue }
            let attempts = e.assigned.spec.health?.attempts ?? 3
            if ok {
                if e.state != .healthy { e.state = .healthy; e.since = Date(); e.healthySince = .now }
                e.failures = 0
                // A process that stayed up a minute starts its backoff from scratch.
                if let h = e.healthySince, ContinuousClock.now - h > .seconds(60) { e.restarts = 0 }
                e.nextCheck = .now + .seconds(2)
            } else {
                e.failures += 1
                if e.state == .healthy && e.failures >= min(attempts, 3) { e.state = .unhealthy; e.since = Date(); e.healthySince = nil }
                e.nextCheck = .now + (e.state == .starting ? .milliseconds(100) : .seconds(1))
            }
            table[id] = e
        }
    }
}
