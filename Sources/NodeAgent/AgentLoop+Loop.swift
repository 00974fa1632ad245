import Cluster
import Foundation
import KbuildCore
import KbuildState

/// The agent's loop: read the assignment, converge to it, check health, report, wait for a change.
extension AgentLoop {
    func run() async throws {
        // Release phases run as children of the loop: they end with it.
        try await withThrowingDiscardingTaskGroup { group in
            // The heartbeat does not wait for a pass of the loop (a long image checkout, a slow health check):
            // the node is lost only when the agent is.
            group.addTask { try await self.heartbeats() }
            try await loop(starting: { task in group.addTask { await self.runReleasePhase(task) } })
        }
    }

    /// Reports again whenever a heartbeat is due and the loop has not (once it has reported at all).
    func heartbeats() async throws {
        while true {
            try await Task.sleep(for: config.heartbeat / 2)
            guard lastReport != nil, !reporting, ContinuousClock.now - lastBeat >= config.heartbeat else { continue }
            do { try await report() } catch { agent.log("agent \(config.name): heartbeat: \(error)") }
        }
    }

    func loop(starting releasePhase: (ReleaseTask) -> Void) async throws {
        // The newest state seen: the revision never goes back, so a store that
        // answers older (a lagging replica, a restored backup) is not acted on.
        var seen = Revision.zero
        // The last assignment read: while the store cannot be reached, the
        // node keeps running (and restarting) what it was last told to; until
        // one is read, nothing is started or stopped (a restarted agent whose
        // store is away keeps the processes it adopted).
        var assignment: Assignment?
        var read = false
        var saidOlder = false
        // The newest scheduler term acted on (`Assignment.fence`): an assignment a deposed scheduler
        // wrote after a newer one's is not acted on.
        var term: Int64 = 0
        while true {
            try Task.checkCancellation()
            var revision: Revision?
            do {
                let now = try await agent.refs.currentRevision()
                if now < seen {
                    if !saidOlder { agent.log("agent \(config.name): the store is at revision \(now), older than \(seen) seen before: ignored") }
                    saidOlder = true
                    // A store that went back (restored from a snapshot) elects its schedulers afresh: once it has
                    // passed what was seen, their terms are the ones to follow, however they compare with older ones.
                    term = 0
                } else {
                    seen = now
                    revision = now
                    let latest: Assignment? = if let ref = try await agent.refs.get(try Schema.assignment(config.name)) {
                        try await reader.record(Assignment.self, ref.kid, what: "assignment")
                    } else { nil }
                    if let older = latest?.fence, older < term {
                        if !saidOlder { agent.log("agent \(config.name): an assignment of scheduler term \(older), older than term \(term) acted on: ignored") }
                        saidOlder = true
                    } else {
                        term = max(term, latest?.fence ?? 0)
                        assignment = latest
                        read = true
                        saidOlder = false
                    }
                }
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                agent.log("agent \(config.name): failed to read its assignment (running what it was last assigned): \(error)")
            }
            do {
                if read {
                    // Volumes first: a process that mounts one starts only once it is there.
                    await convergeVolumes(assignment?.volumes ?? [])
                    await reconcile(assignment?.processes ?? [])
                }
                for task in assignment?.tasks ?? [] where revision != nil && !releasePhasesStarted.contains(task.release) {
                    releasePhasesStarted.insert(task.release)
                    releasePhase(task)
                }
                await checkHealth()
                throttleBooted()
                try await report()
                if ContinuousClock.now - lastLogSweep > .seconds(30) {
                    LogCap.sweep(directory: stateDir + "/logs", capPerApp: config.logCapPerApp)
                    lastLogSweep = .now
                }
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                // One bad pass (an unreadable record, a busy or unreachable store) must not take the node down.
                agent.log("agent \(config.name): \(error)")
            }
            do {
                // Its own refs only (its assignment): a node that joined over the network may follow nothing else.
                if let revision {
                    try await reader.waitForChange(after: revision, under: try Schema.node(config.name), timeout: .milliseconds(200))
                } else {
                    try await Task.sleep(for: .milliseconds(500))
                }
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }
}
