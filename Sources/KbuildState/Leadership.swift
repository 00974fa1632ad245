/// Holding a role (the scheduler) alone among many control planes: etcd
/// elects one through a lease (`EtcdElection`); with the state on one
/// machine there is one control plane and nothing to elect.
public protocol LeaderElection: Sendable {
    /// Waits until this process holds `role`, then runs `body` for as long as it does: when the
    /// role is lost (its lease ran out, etcd could not be reached for the lease's length), `body`
    /// is cancelled and the campaign starts again. Returns when `body` returns.
    func lead(_ role: String, _ body: @escaping @Sendable (LeaderTerm) async throws -> Void) async throws
}

/// One term of holding a role.
public struct LeaderTerm: Sendable {
    /// The fencing token: the store's revision at which this term began. Whatever the holder writes
    /// for others to act on carries it, and they ignore anything from an older term.
    public let fence: Int64
    /// The store to write through during the term: each compare-and-swap also checks that the term
    /// still holds, so a holder that lost the role writes nothing more.
    public let refs: any RefStore

    public init(fence: Int64, refs: any RefStore) {
        self.fence = fence
        self.refs = refs
    }
}
