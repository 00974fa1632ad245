import Cluster
public import KbuildState

/// Where a new process goes: a pure function of what each node has free and
/// what it already runs. Only nodes with room for the process's requests are
/// candidates; among them, the fewest processes of the same app and type
/// wins (spreading replicas), then the most memory free, then the name.
public enum Placement {
    public struct Candidate: Sendable, Equatable {
        public var node: String
        public var free: Resources
        /// Processes of the same app and type already there.
        public var siblings: Int

        public init(node: String, free: Resources, siblings: Int) {
            self.node = node
            self.free = free
            self.siblings = siblings
        }
    }

    public static func choose(_ needs: Resources, among candidates: [Candidate]) -> String? {
        candidates.filter { $0.free.fits(needs) }.min { a, b in
            if a.siblings != b.siblings { return a.siblings < b.siblings }
            if a.free.memory != b.free.memory { return a.free.memory > b.free.memory }
            return a.node < b.node
        }?.node
    }

    /// Why nothing fits, for `ps:scale` and the scheduler's events.
    public static func whyNot(_ needs: Resources, among candidates: [Candidate]) -> String {
        guard !candidates.isEmpty else { return "no node is up" }
        let best = candidates.max { $0.free.memory < $1.free.memory }!
        return "a process needs \(needs.description), and the most any node has free is \(best.free.description) (\(best.node))"
    }
}
