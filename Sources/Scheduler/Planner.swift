import Cluster
public import KbuildCore
import Releases
public import Foundation
public import KbuildState

/// How a release replaces the one before it.
public struct RolloutPolicy: Sendable, Equatable {
    /// New processes allowed above the desired count during a rollout.
    public var maxSurge: Int
    /// Processes below the desired count that may be unavailable during a rollout.
    public var maxUnavailable: Int
    /// Restarts after which a new process counts as crash-looping.
    public var crashLoopRestarts: Int
    /// Seconds a new process gets to become healthy.
    public var startTimeout: TimeInterval

    public init(maxSurge: Int = 1, maxUnavailable: Int = 0, crashLoopRestarts: Int = 3, startTimeout: TimeInterval = 60) {
        self.maxSurge = maxSurge
        self.maxUnavailable = maxUnavailable
        self.crashLoopRestarts = crashLoopRestarts
        self.startTimeout = startTimeout
    }
}

/// An app as the scheduler sees it.
public struct AppState: Sendable {
    public var app: String
    public var release: KID
    public var current: Release
    /// The last release that fully converged: where a failed one reverts to.
    public var healthy: KID?
    /// Process type → restart generation.
    public var generations: [String: Int]
    /// How the current release's release phase went (nil: not run yet).
    public var phase: ReleasePhaseRecord?
    /// The healthy release itself: what keeps running while the current one's release phase runs.
    public var healthyRelease: Release?

    public init(app: String, release: KID, current: Release, healthy: KID?, generations: [String: Int] = [:],
                phase: ReleasePhaseRecord? = nil, healthyRelease: Release? = nil) {
        self.app = app
        self.release = release
        self.current = current
        self.healthy = healthy
        self.generations = generations
        self.phase = phase
        self.healthyRelease = healthyRelease
    }
}

/// A node as the scheduler sees it.
public struct NodeState: Sendable {
    public var record: NodeRecord
    public var status: NodeStatus?
    public var assignment: Assignment?
    /// Drained by the admin: nothing new is placed here, and what runs here moves.
    public var draining: Bool

    public init(record: NodeRecord, status: NodeStatus?, assignment: Assignment?, draining: Bool = false) {
        self.record = record
        self.status = status
        self.assignment = assignment
        self.draining = draining
    }

    /// Alive while its heartbeat is fresh; an agent that (re)registered gets
    /// one lease from then to report.
    public func isAlive(at now: Date, lease: TimeInterval) -> Bool {
        record.isAlive(reporting: status, at: now, lease: lease)
    }
}

/// What the scheduler should do besides writing assignments.
public enum PlanEvent: Sendable, Equatable {
    /// The current release failed; go back to the last healthy one.
    case revert(app: String, failed: KID, to: KID, reason: String)
    /// The current release failed and there is nothing to go back to.
    case failed(app: String, release: KID, reason: String)
    /// Every process of the current release is healthy and nothing older runs.
    case converged(app: String, release: KID)
    /// A process could not be placed.
    case unschedulable(app: String, type: String, reason: String)
    /// A node stopped heartbeating; its processes are placed elsewhere.
    case nodeLost(node: String, processes: Int)
    /// A destroyed volume's node deleted it: its record can go.
    case volumeRemoved(app: String, name: String, id: String)
    /// A volume's node made it: from now on it is never made again (`VolumeRecord.madeAt`).
    case volumeMade(app: String, name: String, id: String)
}

public struct Plan: Sendable, Equatable {
    /// Every node's assignment as it should be.
    public var assignments: [String: Assignment]
    public var events: [PlanEvent]
}

/// The scheduler's decisions, as one pure function from what is wanted
/// (each app's release and formation) and what is (nodes, their assignments
/// and reported processes) to the next assignments. Called again on every
/// change, it moves a rollout one step at a time: surge new processes, wait
/// for them to be healthy, retire old ones, never below the available minimum.
public enum Planner {
    /// `trustSilence`: whether a node whose heartbeat ran out is lost. A
    /// scheduler that just started (a restart of `kbuild up`) gives agents one
    /// lease to report first, rather than moving every process at once.
    ///
    /// A process that mounts volumes runs only on their node (`ProcessSpec.pinnedNode`),
    /// whose room is held for it: when that node is lost or drained it is not
    /// started anywhere else (an `unschedulable` event says why), and it is
    /// replaced stop-then-start: a new process never starts beside the one it
    /// replaces (a second Postgres on one data directory).
    public static func plan(apps: [AppState], nodes: [NodeState], volumes: [VolumeRecord] = [], now: Date, policy: RolloutPolicy = RolloutPolicy(),
                            lease: TimeInterval = 10, trustSilence: Bool = true) -> Plan {
        var events: [PlanEvent] = []
        let isAlive = { (node: NodeState) in !trustSilence || node.isAlive(at: now, lease: lease) }
        let alive = nodes.filter(isAlive).sorted { $0.record.name < $1.record.name }
        for node in nodes where !isAlive(node) {
            let count = node.assignment?.processes.count ?? 0
            if count > 0 { events.append(.nodeLost(node: node.record.name, processes: count)) }
        }
        var status: [String: ProcessStatus] = [:]
        // A process's state as the node it is assigned to reports it (another node's word about it does not count).
        for node in alive {
            let own = Set(node.assignment?.processes.map(\.id) ?? [])
            for p in node.status?.processes ?? [] where own.contains(p.id) || status[p.id] == nil { status[p.id] = p }
        }
        let appNames = Set(apps.map(\.app))
        // What stays placed: alive nodes' processes of apps that still exist.
        var placed: [String: [AssignedProcess]] = [:]
        for node in alive {
            placed[node.record.name] = (node.assignment?.processes ?? []).filter { appNames.contains($0.spec.app) }
        }
        func isHealthy(_ p: AssignedProcess) -> Bool { status[p.id]?.state == .healthy }
        // Processes nodes still run but no assignment has (being stopped): they count against the surge,
        // so with maxSurge 0 nothing new starts until the old ones are gone (stop-then-start).
        let assignedIDs = Set(placed.values.flatMap { $0 }.map(\.id))
        var stopping: [String: Int] = [:]
        for node in alive {
            for p in node.status?.processes ?? [] where !assignedIDs.contains(p.id) { stopping["\(p.app)/\(p.type)", default: 0] += 1 }
        }
        func remove(_ p: AssignedProcess) {
            for (node, list) in placed { placed[node] = list.filter { $0.id != p.id } }
        }
        let drained = Set(alive.filter(\.draining).map(\.record.name))
        func onDrainedNode(_ p: AssignedProcess) -> Bool { drained.contains { placed[$0]?.contains { $0.id == p.id } ?? false } }
        // Room on a volume's node is held for the processes that can run nowhere else (what they want, less what
        // of theirs is placed): a process that can go anywhere does not take it while they are stopped or away.
        var held: [String: Resources] = [:]
        for app in apps {
            let release = app.current
            for type in release.runnableTypes {
                guard let spec = ProcessSpec.of(release, type: type, generation: 0), let node = spec.pinnedNode else { continue }
                let want = release.formation[type]?.quantity ?? 0
                let have = placed.values.flatMap { $0 }.filter { $0.spec.app == app.app && $0.spec.type == type }.count
                for _ in 0..<max(0, want - have) { held[node] = (held[node] ?? Resources(memory: 0, cpus: 0)) + spec.resources }
            }
        }
        func candidates(app: String, type: String, pinned: String? = nil) -> [Placement.Candidate] {
            alive.filter { !$0.draining && (pinned == nil || $0.record.name == pinned) }.map { node in
                let list = placed[node.record.name] ?? []
                var used = list.reduce(Resources(memory: 0, cpus: 0)) { $0 + $1.spec.resources }
                if pinned == nil, let h = held[node.record.name] { used = used + h }
                return Placement.Candidate(node: node.record.name, free: node.record.capacity - used,
                                           siblings: list.filter { $0.spec.app == app && $0.spec.type == type }.count)
            }
        }

        /// Why a process with these mounts cannot start on `node` now; nil: it can.
        func whyNotOn(_ node: String, mounts: [VolumeMount]) -> String? {
            for m in mounts {
                guard let v = volumes.first(where: { $0.id == m.id }) else { return "volume \(m.volume) no longer exists" }
                if v.state == .destroying { return "volume \(m.volume) is being destroyed" }
                if m.node != node { return "its volumes are on two nodes (\(node) and \(m.node))" }
            }
            guard let state = nodes.first(where: { $0.record.name == node }) else {
                return "its volume \(mounts[0].volume) is on node \(node), which is not registered"
            }
            if !isAlive(state) {
                return "its volume \(mounts[0].volume) is on node \(node), which is not reporting; it is not started elsewhere without its data"
            }
            if state.draining { return "its volume \(mounts[0].volume) is on node \(node), which is drained" }
            return nil
        }

        // Release phases placed before: they stay on their node while it lives.
        var tasks: [String: [ReleaseTask]] = [:]
        var placedTasks: [KID: (node: String, task: ReleaseTask)] = [:]
        for node in alive { for t in node.assignment?.tasks ?? [] { placedTasks[t.release] = (node.record.name, t) } }

        for app in apps.sorted(by: { $0.app < $1.app }) {
            var release = app.current
            var releaseKID = app.release
            if let command = ReleasePhase.command(of: app.current), app.phase?.release != app.release || app.phase?.state != .succeeded {
                let phase = app.phase?.release == app.release ? app.phase : nil
                // Running on a node that is gone: it died with it (it is not run again: it may have half-run).
                let lost = phase.map { p in p.state == .running && !alive.contains { $0.record.name == p.node } } ?? false
                if let phase, phase.state == .failed || lost {
                    let reason = lost ? "its release command was running on node \(phase.node), which was lost"
                        : "its release command failed: \(phase.reason ?? "exit status \(phase.exitStatus.map(String.init) ?? "?")")"
                    if let good = app.healthy, good != app.release {
                        events.append(.revert(app: app.app, failed: app.release, to: good, reason: reason))
                    } else {
                        events.append(.failed(app: app.app, release: app.release, reason: reason))
                    }
                } else if let (node, task) = placedTasks[app.release] {
                    tasks[node, default: []].append(task)
                } else {
                    // On a node with room for one more of its web processes.
                    let size = release.formation["web"] ?? ProcessFormation(quantity: 1)
                    let needs = Resources(memory: size.memory, cpus: size.cpus)
                    let options = candidates(app: app.app, type: ReleasePhase.processType)
                    if let node = Placement.choose(needs, among: options) {
                        tasks[node, default: []].append(ReleaseTask(app: app.app, release: app.release, version: release.version, image: release.image,
                                                                    config: release.config, command: command, memory: size.memory, cpus: size.cpus,
                                                                    assignedAt: now))
                    } else {
                        events.append(.unschedulable(app: app.app, type: ReleasePhase.processType, reason: Placement.whyNot(needs, among: options)))
                    }
                }
                // Meanwhile what ran before keeps running, as it was; before a first release, nothing.
                guard let held = app.healthyRelease, let heldKID = app.healthy else {
                    for list in placed.values { for p in list where p.spec.app == app.app { remove(p) } }
                    continue
                }
                release = held
                releaseKID = heldKID
            }
            var types = Set(release.formation.keys.filter { release.processTypes[$0] != nil })
            for list in placed.values { for p in list where p.spec.app == app.app { types.insert(p.spec.type) } }
            var failure: String?
            var converged = true
            for type in types.sorted() {
                let spec = ProcessSpec.of(release, type: type, generation: app.generations[type] ?? 0)
                let desired = spec == nil ? 0 : (release.formation[type]?.quantity ?? 0)
                // Volumes: only their node, one process at a time on them, and none while a volume is unusable.
                let pinned = spec?.pinnedNode
                let blocked = pinned.flatMap { node in whyNotOn(node, mounts: spec?.mounts ?? []) }
                let maxSurge = pinned == nil ? policy.maxSurge : 0
                let maxUnavailable = pinned == nil ? policy.maxUnavailable : max(1, policy.maxUnavailable)
                let instances = placed.values.flatMap { $0 }.filter { $0.spec.app == app.app && $0.spec.type == type }
                // A process on a drained node is old whatever its spec: it is replaced as a rollout replaces one.
                var new = instances.filter { $0.spec == spec && !onDrainedNode($0) }.sorted { $0.index < $1.index }
                let old = instances.filter { $0.spec != spec || onDrainedNode($0) }

                for p in new {
                    guard let s = status[p.id] else {
                        if now.timeIntervalSince(p.assignedAt) > policy.startTimeout {
                            failure = failure ?? "\(p.name) did not start within \(Int(policy.startTimeout)) s"
                        }
                        continue
                    }
                    if s.restarts >= policy.crashLoopRestarts, s.state != .healthy {
                        let exit = s.lastExit.map { ", last exit status \($0)" } ?? ""
                        failure = failure ?? "\(p.name) crashed \(s.restarts) times\(exit)"
                    } else if s.state != .healthy, now.timeIntervalSince(p.assignedAt) > policy.startTimeout {
                        failure = failure ?? "\(p.name) was not healthy within \(Int(policy.startTimeout)) s"
                    }
                }

                // Too many of the current spec (scaled down): the unhealthy and the highest numbers go first.
                if new.count > desired {
                    let surplus = new.sorted { (isHealthy($0) ? 1 : 0, -$0.index) < (isHealthy($1) ? 1 : 0, -$1.index) }.prefix(new.count - desired)
                    for p in surplus { remove(p) }
                    new.removeAll { p in surplus.contains { $0.id == p.id } }
                }
                // Retire older processes while enough healthy ones remain (the unhealthy first), then start new ones
                // within the surge allowance.
                let healthyNew = new.filter(isHealthy).count
                var available = healthyNew + old.filter(isHealthy).count
                let minimum = max(0, desired - maxUnavailable)
                var remaining = old.count
                for p in old.sorted(by: { (isHealthy($0) ? 1 : 0, $0.index) < (isHealthy($1) ? 1 : 0, $1.index) }) {
                    // What runs keeps running while its replacement cannot be placed (its volume's node is gone or drained).
                    if blocked != nil && desired > 0 { continue }
                    if !isHealthy(p) {
                        remove(p)
                        remaining -= 1
                    } else if available - 1 >= minimum {
                        remove(p)
                        remaining -= 1
                        available -= 1
                    }
                }
                if new.count < desired, let blocked {
                    events.append(.unschedulable(app: app.app, type: type, reason: blocked))
                } else if new.count < desired {
                    let want = desired - new.count
                    let running = old.count + stopping["\(app.app)/\(type)", default: 0]
                    let room = running == 0 ? want : max(0, desired + maxSurge - new.count - running)
                    // A process of this spec still on a drained node has its number's id: its replacement takes another number.
                    let used = Set(new.map(\.index)).union(old.filter { $0.spec == spec }.map(\.index))
                    let indices = (1...(desired + old.count)).filter { !used.contains($0) }.prefix(min(want, room))
                    for index in indices {
                        let needs = spec!.resources
                        let options = candidates(app: app.app, type: type, pinned: pinned)
                        guard let node = Placement.choose(needs, among: options) else {
                            events.append(.unschedulable(app: app.app, type: type, reason: Placement.whyNot(needs, among: options)))
                            break
                        }
                        let p = AssignedProcess(index: index, spec: spec!, release: releaseKID, version: release.version, assignedAt: now)
                        placed[node, default: []].append(p)
                        new.append(p)
                    }
                }
                if new.count != desired || healthyNew != desired || remaining != 0 { converged = false }
            }
            if let failure, releaseKID != app.healthy {
                if let good = app.healthy {
                    events.append(.revert(app: app.app, failed: releaseKID, to: good, reason: failure))
                } else {
                    events.append(.failed(app: app.app, release: releaseKID, reason: failure))
                }
            } else if converged, releaseKID != app.healthy {
                events.append(.converged(app: app.app, release: releaseKID))
            }
        }

        // Each node keeps its volumes; a destroyed one goes once no process there mounts it, and its record once its node says it went.
        var kept: [String: [AssignedVolume]] = [:]
        let reported = Dictionary(nodes.flatMap { n in (n.status?.volumes ?? []).map { ("\(n.record.name)/\($0.id)", $0) } }, uniquingKeysWith: { a, _ in a })
        for v in volumes {
            let destroying = v.state == .destroying
            if destroying, reported["\(v.node)/\(v.id)"]?.state == .removed {
                events.append(.volumeRemoved(app: v.app, name: v.name, id: v.id))
                continue
            }
            if !destroying, v.madeAt == nil, reported["\(v.node)/\(v.id)"]?.state == .ready {
                events.append(.volumeMade(app: v.app, name: v.name, id: v.id))
            }
            kept[v.node, default: []].append(AssignedVolume(id: v.id, app: v.app, name: v.name, size: v.size, remove: destroying,
                                                            make: v.madeAt == nil))
        }
        var assignments: [String: Assignment] = [:]
        for node in nodes {
            assignments[node.record.name] = Assignment(node: node.record.name, processes: placed[node.record.name] ?? [],
                                                       tasks: tasks[node.record.name] ?? [], volumes: kept[node.record.name] ?? [])
        }
        return Plan(assignments: assignments, events: events)
    }
}
