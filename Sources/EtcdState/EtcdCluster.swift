public import KbuildCore
import Foundation

/// Opening kbuild's state in an etcd cluster: reaching it (waiting, and
/// saying so, while it is down), and making sure what is there is kbuild's,
/// and the same kbuild's this data dir used before.
///
/// `kbuild/meta` names the kbuild cluster the state belongs to (a UUID made
/// by the first control plane to open an empty etcd). A data dir remembers
/// it (`DATA/state.json`), so a control plane pointed at another etcd, or at
/// one that lost its data, refuses to start instead of carrying on with an
/// empty state while its nodes hold the old one.
public enum EtcdCluster {
    struct Meta: Codable {
        var format: Int
        var cluster: String
    }

    /// What a data dir remembers of its state (`DATA/state.json`).
    public struct Remembered: Codable, Sendable, Equatable {
        /// `etcd://…` (nil or "sqlite": the embedded store).
        public var state: String
        public var cluster: String?
        public init(state: String, cluster: String?) {
            self.state = state
            self.cluster = cluster
        }

        public static func read(_ dataDir: DataDir) throws -> Remembered? {
            guard let data = FileManager.default.contents(atPath: dataDir.stateFile.path) else { return nil }
            do {
                return try JSONDecoder().decode(Remembered.self, from: data)
            } catch {
                throw KbuildError(.corrupt, "failed to read \(dataDir.stateFile.path): \(error)")
            }
        }

        public func write(_ dataDir: DataDir) throws {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .prettyPrinted]
            try e.encode(self).write(to: dataDir.stateFile, options: .atomic)
        }
    }

    /// Waits until etcd answers (forever when `wait`, saying why every 5 s), then checks
    /// its data and returns the cluster id. `initialize`: make kbuild's state in an etcd
    /// that holds other data, or none though this data dir remembers some.
    public static func open(_ etcd: EtcdClient, keys: EtcdKeys = EtcdKeys(), remembered: String?, initialize: Bool,
                            wait: Bool, say: @Sendable (String) -> Void) async throws -> String {
        var lastSaid = ContinuousClock.now - .seconds(60)
        while true {
            do {
                _ = try await etcd.status()
                break
            } catch let e as KbuildError where wait && e.message.contains("does not answer") {
                if ContinuousClock.now - lastSaid >= .seconds(5) {
                    say("waiting for etcd: \(e.message)")
                    lastSaid = ContinuousClock.now
                }
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        for _ in 0..<3 {
            if let kv = try await etcd.range(.init(key: keys.meta)).all.first {
                guard let meta = try? JSONDecoder().decode(Meta.self, from: kv.bytes), meta.format == 1 else {
                    throw KbuildError(.corrupt, "etcd at \(etcd.spec) has a \(String(decoding: keys.meta, as: UTF8.self)) key that is not kbuild's (\(EtcdClient.preview(kv.bytes)))")
                }
                if let remembered, remembered != meta.cluster, !initialize {
                    throw KbuildError(.conflict, "etcd at \(etcd.spec) holds kbuild cluster \(meta.cluster), but this data dir was used with cluster \(remembered): point --state at the etcd it used, or use another data dir")
                }
                return meta.cluster
            }
            let (start, end) = keys.prefixRange("")
            let ours = try await etcd.range(.init(key: start, range_end: end, count_only: true)).count?.value ?? 0
            if ours > 0 && !initialize {
                throw KbuildError(.corrupt, "etcd at \(etcd.spec) has \(ours) keys under \(keys.root) but no \(keys.root)meta: this is not a state kbuild made (pass --init-state to take it over)")
            }
            if let remembered, !initialize {
                throw KbuildError(.notFound, "etcd at \(etcd.spec) holds no kbuild state, but this data dir was used with kbuild cluster \(remembered): was etcd replaced or wiped? Restore it (etcdctl snapshot restore), or pass --init-state to start an empty one")
            }
            let all = try await etcd.range(.init(key: Data([0]), range_end: Data([0]), limit: .init(1)))
            if let other = all.all.first, !initialize {
                throw KbuildError(.conflict, "etcd at \(etcd.spec) holds \(all.count?.value ?? 1) keys that are not kbuild's (such as \(String(decoding: other.key.prefix(60), as: UTF8.self).debugQuoted)): give kbuild an etcd of its own, or pass --init-state to keep kbuild's state beside them under \(keys.root)")
            }
            let meta = Meta(format: 1, cluster: UUID().uuidString.lowercased())
            let made = try await etcd.txn(.init(compare: [.createRevision(keys.meta, is: 0)],
                                                success: [.put(.init(key: keys.meta, value: try JSONEncoder().encode(meta)))]))
            if made.ok {
                say("state     new kbuild cluster \(meta.cluster) in etcd at \(etcd.spec)")
                return meta.cluster
            }
            // Another control plane made it first: read theirs.
        }
        throw KbuildError(.conflict, "failed to open kbuild's state in etcd at \(etcd.spec): its meta key kept changing")
    }
}
