public import KbuildCore
import Foundation

/// The control planes that are up, each under a lease of its own
/// (`kbuild/members/<name>`): where their Kegs and git repositories are
/// reached, so a control plane fetches what it lacks from another, and sends
/// a push's objects to another before the push is acknowledged. A control
/// plane that dies drops out when its lease runs out.
public struct EtcdMembers: Sendable {
    public struct Member: Codable, Sendable, Equatable {
        /// Unique among control planes: host and port.
        public var name: String
        /// Its API, git and Keg (`https://…`, signed by `ca`).
        public var url: String
        /// Its CA certificate (PEM): peers trust it alone for `url`.
        public var ca: String
        public init(name: String, url: String, ca: String) {
            self.name = name
            self.url = url
            self.ca = ca
        }
    }

    public let etcd: EtcdClient
    public let keys: EtcdKeys
    public let ttl: Int64

    public init(etcd: EtcdClient, keys: EtcdKeys = EtcdKeys(), ttl: Int64 = 5) {
        self.etcd = etcd
        self.keys = keys
        self.ttl = ttl
    }

    /// Every control plane that is up (its lease alive), by name.
    public func list() async throws -> [Member] {
        let (start, end) = keys.members
        return try await etcd.range(.init(key: start, range_end: end)).all.compactMap { kv in
            guard let m = try? JSONDecoder().decode(Member.self, from: kv.bytes) else {
                EtcdRefStore.skipped(kv.key, "not a control plane's record")
                return nil
            }
            return m
        }.sorted { $0.name < $1.name }
    }

    /// Keeps `member` registered until cancelled (re-registering after a lease was lost), then removes it.
    /// `member` is asked for once at start and again when the registration is made anew.
    public func keep(_ member: @escaping @Sendable () async throws -> Member, say: @escaping @Sendable (String) -> Void) async throws {
        var lease: Int64?
        var renewed = ContinuousClock.now
        while true {
            do {
                try Task.checkCancellation()
                if let held = lease, try await etcd.keepAlive(lease: held) != nil {
                    renewed = .now
                } else {
                    let m = try await member()
                    let (id, _) = try await etcd.grantLease(ttl: ttl)
                    _ = try await etcd.put(.init(key: keys.member(m.name), value: try JSONEncoder().encode(m), lease: .init(id)))
                    if lease != nil { say("control plane \(m.name): registered again (its lease had run out)") }
                    lease = id
                    renewed = .now
                }
                try await Task.sleep(for: .seconds(ttl) / 3)
            } catch let e as KbuildError {
                if ContinuousClock.now - renewed > .seconds(ttl) { lease = nil }
                say("control plane registration: \(e.message)")
                try? await Task.sleep(for: .seconds(ttl) / 3)
            } catch {
                // Stopping: leave at once rather than when the lease runs out (awaited in a task of its
                // own, since this one is cancelled).
                if let lease {
                    let etcd = self.etcd
                    await Task.detached { try? await etcd.revokeLease(lease) }.value
                }
                throw error
            }
        }
    }

    /// The cluster's admin token, shared by every control plane: the one already in etcd, or `local`
    /// (this data dir's) when it is the first. etcd's own access control guards it, as it guards the rest.
    public func sharedAdminToken(local: String) async throws -> String {
        let key = keys.key("admin-token")
        let answer = try await etcd.txn(.init(compare: [.createRevision(key, is: 0)], success: [.put(.init(key: key, value: Data(local.utf8)))],
                                              failure: [.range(.init(key: key))]))
        if answer.ok { return local }
        guard let kv = answer.ranges.first?.all.first, !kv.bytes.isEmpty else {
            throw KbuildError(.corrupt, "etcd at \(etcd.spec) has an empty admin token")
        }
        return String(decoding: kv.bytes, as: UTF8.self)
    }
}
