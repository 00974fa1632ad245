public import KbuildCore

public import KbuildState
import Foundation
import Synchronization

/// Reads the cluster's records from the refs, decoding each object once
/// (they are immutable, so a cache by KID never goes stale).
public final class ClusterReader: Sendable {
    /// Where the records are: the Keg on the control plane, the API on a node of its own.
    public let records: any RecordContent
    public let refs: any RefStore
    private let cache = Mutex<[KID: any Sendable]>([:])
    /// Each node's last report and assignment as decoded, by its ref: superseded within seconds (a heartbeat is a
    /// new KID), so only the newest is kept, one per ref (bounded by the nodes), and read again when the KID moves.
    private let latest = Mutex<[RefName: (kid: KID, value: any Sendable)]>([:])

    public init(records: any RecordContent, refs: any RefStore) {
        self.records = records
        self.refs = refs
    }

    public func record<T: Decodable & Sendable>(_ type: T.Type, _ kid: KID, what: String) async throws -> T {
        if let hit = cache.withLock({ $0[kid] }) as? T { return hit }
        let value = try await Records.get(type, kid, from: records, what: what)
        cache.withLock { c in
            if c.count > 4096 { c.removeAll() }
            c[kid] = value
        }
        return value
    }

    /// The record `kid` names, or nil when there is no KID (an absent ref).
    public func record<T: Decodable & Sendable>(_ type: T.Type, ifAny kid: KID?, what: String) async throws -> T? {
        guard let kid else { return nil }
        return try await record(type, kid, what: what)
    }

    /// Every registered node with its status and assignment.
    public func nodes() async throws -> [(record: NodeRecord, status: NodeStatus?, assignment: Assignment?)] {
        let all = try await refs.list(prefix: Schema.nodes)
        var byNode: [String: (record: NodeRecord?, status: NodeStatus?, assignment: Assignment?)] = [:]
        for ref in all {
            // A record that is not what its ref says (or names another node) is skipped: one bad node must not stop every reader.
            switch Schema.Key(ref.name) {
            case .node(let node):
                guard let r = try? await record(NodeRecord.self, ref.kid, what: "node"), r.name == node else { continue }
                byNode[node, default: (nil, nil, nil)].record = r
            case .status(let node):
                guard let s = try? await newest(NodeStatus.self, ref, what: "node status"), s.node == node else { continue }
                byNode[node, default: (nil, nil, nil)].status = s
            case .assignment(let node):
                byNode[node, default: (nil, nil, nil)].assignment = try await newest(Assignment.self, ref, what: "assignment")
            default: continue
            }
        }
        let now = Date()
        return byNode.keys.sorted().compactMap { name in
            let n = byNode[name]!
            guard let record = n.record else { return nil }
            return (ClusterReader.arrivals.rebase(record, now: now), n.status.map { ClusterReader.arrivals.rebase($0, now: now) }, n.assignment)
        }
    }

    /// When this process saw each node's reports arrive, shared by every reader in it.
    static let arrivals = Arrivals()

    /// A node's times on this process's clock. A node stamps its reports with its own clock, which may be
    /// minutes off; once this process has seen a node's stamp change, it takes the new report as having
    /// arrived when it saw it, and moves every time in it by the difference. So in a long-lived process
    /// (the scheduler, the API, the router) a node is alive while its reports keep arriving, whatever its
    /// clock says. A stamp seen for the first time is taken as it is (a short-lived CLI has nothing else).
    final class Arrivals: Sendable {
        private let seen = Mutex<[String: (stamp: Date, offset: TimeInterval)]>([:])

        func offset(_ key: String, stamp: Date, now: Date) -> TimeInterval {
            seen.withLock { seen in
                if let s = seen[key] {
                    if s.stamp == stamp { return s.offset }
                    let offset = now.timeIntervalSince(stamp)
                    seen[key] = (stamp, offset)
                    return offset
                }
                seen[key] = (stamp, 0)
                return 0
            }
        }

        func rebase(_ status: NodeStatus, now: Date) -> NodeStatus {
            let delta = offset("status/" + status.node, stamp: status.at, now: now)
            guard delta != 0 else { return status }
            var s = status
            s.at += delta
            for i in s.processes.indices { s.processes[i].since += delta }
            return s
        }

        func rebase(_ record: NodeRecord, now: Date) -> NodeRecord {
            var r = record
            r.startedAt += offset("node/" + record.name, stamp: record.startedAt, now: now)
            return r
        }
    }

    /// The record `ref` names now, decoded once per KID it names.
    func newest<T: Decodable & Sendable>(_ type: T.Type, _ ref: Ref, what: String) async throws -> T {
        if let (kid, value) = latest.withLock({ $0[ref.name] }), kid == ref.kid, let hit = value as? T { return hit }
        let value = try await Records.get(type, ref.kid, from: records, what: what)
        latest.withLock { $0[ref.name] = (ref.kid, value) }
        return value
    }

    /// The nodes the admin drained (`nodes:drain`: a `nodes/NODE/drain` ref).
    public func drainedNodes() async throws -> Set<String> {
        Set(try await refs.list(prefix: Schema.nodes).compactMap { ref -> String? in
            if case .drain(let node) = Schema.Key(ref.name) { node } else { nil }
        })
    }

    /// Returns once anything (under `prefix`) changed after `revision`, or after `timeout`.
    public func waitForChange(after revision: Revision, under prefix: RefName? = nil, timeout: Duration) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await Task.sleep(for: timeout) }
            group.addTask { [refs] in
                for try await _ in refs.watch(prefix: prefix, after: revision) { return }
            }
            _ = try await group.next()
            group.cancelAll()
        }
    }
}
