import Foundation
import KbuildCore
public import KbuildState

/// Keeps the reports of nodes from growing etcd without bound: a node
/// reports every second, each report a record and a change of
/// `nodes/NODE/status`, which no one reads once it is old. Every minute the
/// one elected pruner drops all but the newest `keep` changes of each node's
/// status and the records they named (never the one the ref names now).
/// Releases, pushes and processes keep their whole history.
public struct EtcdPruner: Sendable {
    public let store: EtcdRefStore
    public let keep: Int
    public let every: Duration

    public init(store: EtcdRefStore, keep: Int = 120, every: Duration = .seconds(60)) {
        self.store = store
        self.keep = keep
        self.every = every
    }

    /// Prunes on every period until cancelled.
    public func run(say: @Sendable (String) -> Void) async throws {
        while true {
            do {
                let dropped = try await prune()
                if dropped > 0 { say("pruner: dropped \(dropped) old node reports") }
            } catch let e as KbuildError {
                say("pruner: \(e.message)")
            }
            try await Task.sleep(for: every)
        }
    }

    /// One pass; returns how many changes it dropped.
    @discardableResult
    public func prune() async throws -> Int {
        var dropped = 0
        for ref in try await store.list(prefix: Schema.nodes) {
            guard case .status = Schema.Key(ref.name) else { continue }
            let (start, end) = store.keys.logOf(ref.name)
            let all = try await store.etcd.range(.init(key: start, range_end: end, sort_order: "DESCEND", sort_target: "KEY")).all
            guard all.count > keep else { continue }
            let old = all[keep...]
            var kids = Set<KID>()
            for kv in old { if let c = store.change(kv), let kid = c.new, kid != ref.kid { kids.insert(kid) } }
            // Everything from the oldest change up to (not including) the newest one kept.
            let upTo = all[keep - 1].key
            var ops: [EtcdWire.RequestOp] = [.init(request_delete_range: .init(key: start, range_end: upTo))]
            ops += kids.map { .delete(store.keys.record($0)) }
            for batch in stride(from: 0, to: ops.count, by: 100).map({ Array(ops[$0..<min(ops.count, $0 + 100)]) }) {
                _ = try await store.etcd.txn(.init(success: batch))
            }
            dropped += old.count
        }
        return dropped
    }
}
