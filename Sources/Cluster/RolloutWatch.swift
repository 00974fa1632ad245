public import KbuildCore
public import Keg
public import KbuildState
public import Foundation

/// Waits for the scheduler's verdict on one release, for whoever made it
/// (the pusher's hook): converged, reverted, failed or unschedulable.
public enum RolloutWatch {
    public enum Outcome: Sendable {
        case done(RolloutRecord)
        /// No node agent is up: the release rolls out when one starts.
        case noNodes
        case timedOut
    }

    public static func wait(app: String, release: KID, keg: Keg, refs: any RefStore, timeout: Duration, lease: TimeInterval = 10) async throws -> Outcome {
        let reader = ClusterReader(records: keg, refs: refs)
        let deadline = ContinuousClock.now + timeout
        let ref = try Schema.rollout(app)
        var checkedNodes = false
        while ContinuousClock.now < deadline {
            let revision = try await refs.currentRevision()
            // The newest records first: a revert writes the failed release's record after the revert release.
            for change in try await refs.history(ref, limit: 5) {
                guard let kid = change.new else { continue }
                let record = try await reader.record(RolloutRecord.self, kid, what: "rollout")
                if record.release == release { return .done(record) }
            }
            if !checkedNodes {
                let now = Date()
                let alive = try await reader.nodes().contains { $0.record.isAlive(reporting: $0.status, at: now, lease: lease) }
                if !alive { return .noNodes }
                checkedNodes = true
            }
            try await reader.waitForChange(after: revision, timeout: .milliseconds(250))
        }
        return .timedOut
    }
}
