public import KbuildState
import Foundation
import KbuildCore

/// One holder of a role among many control planes, elected through etcd: a
/// holder is whoever created `kbuild/leader/<role>` under its lease (a txn
/// that creates it only if absent). Its term's fence is the key's create
/// revision, and its writes go through a store fenced by that key
/// (`EtcdRefStore.fenced`): once the key is gone (the lease ran out or was
/// revoked) or another's, nothing the old holder writes lands.
///
/// Times are etcd's lease TTL and this process's monotonic clock, never wall
/// clocks, so control planes whose clocks disagree by minutes elect alike. A
/// holder that cannot renew its lease gives the role up one second before
/// the lease can have run out on etcd's side, so two never act at once.
public struct EtcdElection: LeaderElection {
    public let store: EtcdRefStore
    /// Who is campaigning, as others see it in the leader key (a control plane's name and URL).
    public let holder: String
    /// The lease's length: how long a holder that died keeps the role.
    public let ttl: Int64
    let say: @Sendable (String) -> Void

    public init(store: EtcdRefStore, holder: String, ttl: Int64 = 5, say: @escaping @Sendable (String) -> Void = { _ in }) {
        self.store = store
        self.holder = holder
        self.ttl = max(2, ttl)
        self.say = say
    }

    struct LostRole: Error {}

    public func lead(_ role: String, _ body: @escaping @Sendable (LeaderTerm) async throws -> Void) async throws {
        let etcd = store.etcd, key = store.keys.leader(role)
        var saidWaiting = false
        while true {
            try Task.checkCancellation()
            let lease: Int64, granted: Int64, renewed: ContinuousClock.Instant
            do {
                let started = ContinuousClock.now
                (lease, granted) = try await etcd.grantLease(ttl: ttl)
                renewed = started
            } catch let e as KbuildError {
                say("\(role): cannot campaign: \(e.message)")
                try await Task.sleep(for: .seconds(1))
                continue
            }
            let term: Int64?
            var lastRenewed = renewed
            do {
                term = try await campaign(key: key, lease: lease, granted: granted, renewed: &lastRenewed, saidWaiting: &saidWaiting)
            } catch {
                await release(lease)
                throw error
            }
            guard let term else { continue }
            saidWaiting = false
            let fenced = store.fenced(by: key, createRevision: term)
            do {
                try await withThrowingTaskGroup(of: Bool.self) { group in
                    group.addTask { try await body(LeaderTerm(fence: term, refs: fenced)); return true }
                    group.addTask { [lastRenewed] in try await self.hold(lease: lease, granted: granted, renewed: lastRenewed, key: key, term: term); return false }
                    let finished = try await group.next() ?? false
                    group.cancelAll()
                    if !finished { throw LostRole() }
                }
                await release(lease)
                return
            } catch is LostRole {
                // The key may be gone while the lease lives on: let it go before campaigning with a new one.
                await release(lease)
                say("\(role): lost the role (term \(term)); campaigning again")
            } catch {
                await release(lease)
                throw error
            }
        }
    }

    /// Creates the leader key under `lease`, or waits (renewing the lease) while another holds it.
    /// Returns the term (the key's create revision), or nil when the lease ran out meanwhile.
    func campaign(key: Data, lease: Int64, granted: Int64, renewed: inout ContinuousClock.Instant, saidWaiting: inout Bool) async throws -> Int64? {
        while true {
            try Task.checkCancellation()
            do {
                let answer = try await store.etcd.txn(.init(
                    compare: [.createRevision(key, is: 0)],
                    success: [.put(.init(key: key, value: Data(holder.utf8), lease: .init(lease)))],
                    failure: [.range(.init(key: key))]))
                if answer.ok { return answer.header?.rev }
                // Our own key: an earlier create that went through though its answer was lost.
                if let held = answer.ranges.first?.all.first, held.lease?.value == lease { return held.createRevision }
                if !saidWaiting, let other = answer.ranges.first?.all.first {
                    say("standby: \(String(decoding: other.bytes, as: UTF8.self)) holds \(String(decoding: key, as: UTF8.self))")
                    saidWaiting = true
                }
                if ContinuousClock.now - renewed > .seconds(granted) / 3 {
                    let asked = ContinuousClock.now
                    guard try await store.etcd.keepAlive(lease: lease) != nil else { return nil }
                    renewed = asked
                }
            } catch let e as KbuildError {
                say("campaign: \(e.message)")
                if ContinuousClock.now - renewed > .seconds(granted) - .seconds(1) { return nil }
            }
            try await Task.sleep(for: .milliseconds(250))
        }
    }

    /// Renews the lease every third of its length; returns when it was lost: etcd said it expired, or it
    /// was not renewed within its length less a second of the last renewal's request (it may be expiring
    /// on etcd's side), however long a keepalive takes to answer.
    /// It is lost too when the leader key is gone or another's (deleted by hand, or a restore).
    func hold(lease: Int64, granted: Int64, renewed: ContinuousClock.Instant, key: Data, term: Int64) async throws {
        var renewed = renewed
        while true {
            try await Task.sleep(until: min(renewed + .seconds(granted) / 3, renewed + .seconds(granted) - .seconds(1)))
            let asked = ContinuousClock.now
            let deadline = renewed + .seconds(granted) - .seconds(1)
            let kept: Bool? = try await withThrowingTaskGroup(of: Bool?.self) { group in
                group.addTask {
                    do { return try await self.store.etcd.keepAlive(lease: lease) != nil } catch let e as KbuildError {
                        self.say("lease: \(e.message)")
                        return nil
                    }
                }
                group.addTask {
                    try await Task.sleep(until: deadline)
                    return false
                }
                let first = try await group.next() ?? false
                group.cancelAll()
                return first
            }
            switch kept {
            case true?:
                renewed = asked
                if let held = try? await store.etcd.range(.init(key: key)), held.all.first?.createRevision != term { return }
            case false?: return
            case nil: if ContinuousClock.now >= deadline { return }
            }
        }
    }

    /// Gives the role up at once (a holder that stops), so another need not wait out the lease.
    func release(_ lease: Int64) async {
        let etcd = store.etcd
        // Awaited, in a task of its own: the caller is being cancelled, and the revoke must still be sent.
        await Task.detached { try? await etcd.revokeLease(lease) }.value
    }
}
