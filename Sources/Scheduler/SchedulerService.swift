public import Cluster
import KbuildCore
public import Keg
public import KbuildState
import Releases
public import Foundation
public import ServiceLifecycle

/// The scheduler: reads releases and nodes, asks the `Planner` what each node
/// should run, writes the assignments that changed, and carries out the
/// plan's events (revert a failed release, mark a converged one healthy).
/// It runs again on every change under apps/ and nodes/, and at least once a
/// second (timeouts and leases run out without a change).
public final class SchedulerService: Service {
    public let reader: ClusterReader
    let keg: Keg
    public let policy: RolloutPolicy
    public let lease: TimeInterval
    let log: @Sendable (String) -> Void
    /// When this scheduler started: silent nodes are not lost until one lease after.
    let started = Date()
    static let actor = "scheduler"
    /// Who elects the one active scheduler among many control planes; nil: this is the only one.
    let election: (any LeaderElection)?
    /// The term this scheduler writes in (`LeaderTerm.fence`), carried by every assignment.
    let fence: Int64?

    public init(keg: Keg, refs: any RefStore, policy: RolloutPolicy = RolloutPolicy(), lease: TimeInterval = NodeRecord.defaultLease,
                election: (any LeaderElection)? = nil, fence: Int64? = nil, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.reader = ClusterReader(records: keg, refs: refs)
        self.keg = keg
        self.policy = policy
        self.lease = lease
        self.election = election
        self.fence = fence
        self.log = log
    }

    var refs: any RefStore { reader.refs }

    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                guard let election = self.election else { return try await self.schedule() }
                // Elected: each term schedules through the term's store (every write checks the term still
                // holds) and stamps its assignments with the term's fence.
                try await election.lead("scheduler") { [keg = self.keg, policy = self.policy, lease = self.lease, log = self.log] term in
                    log("scheduler: active here (term \(term.fence))")
                    try await SchedulerService(keg: keg, refs: term.refs, policy: policy, lease: lease, fence: term.fence, log: log).schedule()
                }
            }
        } catch is CancellationError {
            // Shutting down; the next scheduler plans from the refs.
        }
    }

    /// Plans on every change, and at least once a second, until cancelled.
    func schedule() async throws {
        while !Task.isCancelled {
            do {
                let revision = try await refs.currentRevision()
                do {
                    try await step()
                } catch is CancellationError {
                    return
                } catch {
                    log("scheduler: \(error)")
                }
                try await reader.waitForChange(after: revision, timeout: .seconds(1))
            } catch is CancellationError {
                return
            } catch {
                // The store is away (etcd lost its quorum, the network is cut): try again in a moment.
                log("scheduler: \(error)")
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    /// One pass: plan from what the refs say now, write what changed.
    public func step(now: Date = Date()) async throws {
        let apps = try await appStates()
        let drained = try await reader.drainedNodes()
        let nodes = try await reader.nodes().map {
            NodeState(record: $0.record, status: $0.status, assignment: $0.assignment, draining: drained.contains($0.record.name))
        }
        let volumes = try await volumeRecords()
        let plan = Planner.plan(apps: apps, nodes: nodes, volumes: volumes, now: now, policy: policy, lease: lease,
                                trustSilence: now.timeIntervalSince(started) > lease)
        for node in nodes {
            guard var next = plan.assignments[node.record.name] else { continue }
            next.fence = fence
            guard next != node.assignment else { continue }
            let kid = try await Records.put(next, in: keg)
            let ref = try Schema.assignment(node.record.name)
            let current = try await refs.get(ref)
            // Lost to a concurrent scheduler: the next pass plans again from what it wrote.
            _ = try? await refs.compareAndSwap(ref, to: kid, expecting: current.map { .value($0.kid) } ?? .absent, actor: Self.actor)
        }
        for event in plan.events { try await apply(event, apps: apps) }
    }

    func appStates() async throws -> [AppState] {
        let refs = try await self.refs.list(prefix: Schema.apps)
        var byApp: [String: [Schema.AppField: KID]] = [:]
        for ref in refs {
            guard case .appField(let app, let field) = Schema.Key(ref.name) else { continue }
            byApp[app, default: [:]][field] = ref.kid
        }
        var out: [AppState] = []
        for (app, named) in byApp.sorted(by: { $0.key < $1.key }) {
            guard let kid = named[.release] else { continue }
            let release = try await reader.record(Release.self, kid, what: "release")
            let generations = if let k = named[.restarts] { try await reader.record(RestartGenerations.self, k, what: "restarts").generations } else { [String: Int]() }
            // Written by a node: one that does not read is as if absent (the phase runs again), not a stop for every app.
            let phase: ReleasePhaseRecord? = if let k = named[.releasePhase] { try? await reader.record(ReleasePhaseRecord.self, k, what: "release phase") } else { nil }
            let healthy: Release? = if let k = named[.healthy] { try await reader.record(Release.self, k, what: "release") } else { nil }
            out.append(AppState(app: app, release: kid, current: release, healthy: named[.healthy], generations: generations,
                                phase: phase, healthyRelease: healthy))
        }
        return out
    }

    func volumeRecords() async throws -> [VolumeRecord] {
        var out: [VolumeRecord] = []
        for ref in try await refs.list(prefix: Schema.volumes) {
            guard case .volume = Schema.Key(ref.name) else { continue }
            out.append(try await reader.record(VolumeRecord.self, ref.kid, what: "volume"))
        }
        return out
    }

    func apply(_ event: PlanEvent, apps: [AppState]) async throws {
        switch event {
        case .volumeMade(let app, let name, let id):
            _ = try await refs.update(try Schema.volume(app, name), as: VolumeRecord.self, in: keg, what: "volume", actor: Self.actor) { old in
                guard var v = old, v.id == id, v.madeAt == nil else { return old }
                v.madeAt = Date()
                return v
            }
        case .volumeRemoved(let app, let name, let id):
            let ref = try Schema.volume(app, name)
            guard let current = try await refs.get(ref),
                  (try await reader.record(VolumeRecord.self, current.kid, what: "volume")).id == id else { return }
            _ = try? await refs.compareAndSwap(ref, to: nil, expecting: .value(current.kid), actor: Self.actor)
            log("scheduler: volume \(name) of \(app) is deleted")
        case .converged(let app, let release):
            let version = apps.first { $0.app == app }?.current.version ?? 0
            try await refs.set(try Schema.healthy(app), to: release, actor: Self.actor)
            try await record(RolloutRecord(app: app, release: release, version: version, state: .converged))
            log("scheduler: \(app) v\(version) is healthy")
        case .revert(let app, let failed, let good, let reason):
            let version = apps.first { $0.app == app }?.current.version ?? 0
            guard let entry = try await ReleaseStore(keg: keg, refs: refs).revert(app: app, failed: failed, to: good, reason: reason, actor: Self.actor) else { return }
            try await record(RolloutRecord(app: app, release: failed, version: version, state: .reverted, reason: reason, revertedBy: entry.version))
            log("scheduler: \(app) v\(version) \(reason): reverted (v\(entry.version))")
        case .failed(let app, let release, let reason):
            let version = apps.first { $0.app == app }?.current.version ?? 0
            try await record(RolloutRecord(app: app, release: release, version: version, state: .failed, reason: reason))
        case .unschedulable(let app, let type, let reason):
            guard let state = apps.first(where: { $0.app == app }) else { return }
            try await record(RolloutRecord(app: app, release: state.release, version: state.current.version, state: .unschedulable,
                                           reason: "cannot place \(type): \(reason)"))
        case .nodeLost(let node, let processes):
            log("scheduler: node \(node) stopped heartbeating; placing its \(processes) processes elsewhere")
        }
    }

    /// Writes the rollout record unless the same news is there already.
    func record(_ rollout: RolloutRecord) async throws {
        let ref = try Schema.rollout(rollout.app)
        if let current = try await refs.get(ref) {
            let old = try await reader.record(RolloutRecord.self, current.kid, what: "rollout")
            if old.release == rollout.release && old.state == rollout.state && old.reason == rollout.reason { return }
        }
        let kid = try await Records.put(rollout, in: keg)
        try await refs.set(ref, to: kid, actor: Self.actor)
    }
}
