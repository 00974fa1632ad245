public import KbuildCore
public import Foundation

/// Which objects `gc` must keep, as a pure function of the refs and their
/// history: the current value of every ref; every value in the history of a
/// ref under a protected prefix (rollback targets: `apps/*/release`); for other
/// refs the last `keepLast` values and every value newer than `keepFor` (only the
/// last `keepLast` for `keepLastOnly` ones: heartbeats);
/// everything under `pins/`.
public struct RetentionRule: Sendable, Equatable {
    public var keepLast: Int
    public var keepFor: TimeInterval
    /// Ref name patterns whose whole history is kept; `*` matches one segment.
    public var keepAllHistory: [String]

    /// Ref name patterns whose past values go after `keepLast` whatever their
    /// age: heartbeats (`nodes/*/status`, one every few seconds) would otherwise
    /// keep a month of reports.
    public var keepLastOnly: [String]

    public static let `default` = RetentionRule(keepLast: 10, keepFor: 30 * 86400, keepAllHistory: ["apps/*/release", "pins/**"],
                                                keepLastOnly: ["nodes/*/status"])

    public init(keepLast: Int, keepFor: TimeInterval, keepAllHistory: [String], keepLastOnly: [String] = []) {
        self.keepLast = keepLast
        self.keepFor = keepFor
        self.keepAllHistory = keepAllHistory
        self.keepLastOnly = keepLastOnly
    }

    /// The roots to keep, given each ref's history (newest first) and the current refs.
    public func roots(current: [Ref], history: [RefName: [RefChange]], now: Date) -> Set<KID> {
        var keep = Set(current.map(\.kid))
        for (name, changes) in history {
            let all = keepAllHistory.contains { RetentionRule.matches(pattern: $0, name: name) }
            let lastOnly = keepLastOnly.contains { RetentionRule.matches(pattern: $0, name: name) }
            for (i, change) in changes.enumerated() {
                let young = !lastOnly && now.timeIntervalSince(change.time) < keepFor
                guard all || i < keepLast || young else { continue }
                if let kid = change.new { keep.insert(kid) }
                if let kid = change.old { keep.insert(kid) }
            }
        }
        return keep
    }

    /// `*` matches one segment, a final `**` any number of them.
    static func matches(pattern: String, name: RefName) -> Bool {
        let p = pattern.split(separator: "/")
        let n = name.rawValue.split(separator: "/")
        for (i, part) in p.enumerated() {
            if part == "**" { return i == p.count - 1 && n.count >= i }
            guard i < n.count, part == "*" || part == n[i] else { return false }
        }
        return p.count == n.count
    }

    /// Reads every ref and its history from `store` and applies the rule.
    public func roots(in store: any RefStore, now: Date = Date()) async throws -> Set<KID> {
        let current = try await store.list(prefix: nil)
        var history: [RefName: [RefChange]] = [:]
        for change in try await store.changesAll() {
            history[change.name, default: []].insert(change, at: 0)
        }
        return roots(current: current, history: history, now: now)
    }
}

extension RefStore {
    /// Every change in the store, oldest first.
    func changesAll() async throws -> [RefChange] {
        var all: [RefChange] = []
        var after = Revision.zero
        while true {
            let page = try await changes(prefix: nil, after: after, limit: 10_000)
            guard let last = page.last else { return all }
            all.append(contentsOf: page)
            after = last.revision
        }
    }
}
