public import KbuildCore
public import Foundation

/// A store-wide, strictly increasing number: every change gets the next one.
/// Watches resume from a revision, the way etcd's do.
public struct Revision: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public let value: Int64
    public init(_ value: Int64) { self.value = value }
    public static let zero = Revision(0)
    public static func < (a: Revision, b: Revision) -> Bool { a.value < b.value }
    public var description: String { String(value) }
}

/// A ref as it is now.
public struct Ref: Sendable, Equatable, Codable {
    public var name: RefName
    public var kid: KID
    /// The revision of the change that set this value.
    public var revision: Revision
    /// How many times this ref has been set (1 for a new ref), like a release vN.
    public var version: Int64

    public init(name: RefName, kid: KID, revision: Revision, version: Int64) {
        self.name = name
        self.kid = kid
        self.revision = revision
        self.version = version
    }
}

/// One change of one ref: the unit of history and of watch.
public struct RefChange: Sendable, Equatable, Codable {
    public var revision: Revision
    public var name: RefName
    /// The value before, nil when the ref was created.
    public var old: KID?
    /// The value after, nil when the ref was deleted.
    public var new: KID?
    /// The ref's version after this change (0 after a delete).
    public var version: Int64
    public var time: Date
    /// Who made the change (a user, or a service such as `scheduler`).
    public var actor: String

    public init(revision: Revision, name: RefName, old: KID?, new: KID?, version: Int64, time: Date, actor: String) {
        self.revision = revision
        self.name = name
        self.old = old
        self.new = new
        self.version = version
        self.time = time
        self.actor = actor
    }
}

/// What a compare-and-swap expects to find.
public enum RefExpectation: Sendable, Equatable {
    /// Whatever is there (an unconditional write).
    case any
    /// No ref by that name.
    case absent
    /// The ref exists and holds this KID.
    case value(KID)
    /// The ref was last changed at this revision (absent refs never match).
    case revision(Revision)
}

extension RefExpectation {
    /// Throws `.conflict`, naming what was found, unless `current` is what this expects: the one
    /// rule every store applies before it writes.
    public func check(current: Ref?, name: RefName) throws {
        let found = current.map { "\($0.kid) at revision \($0.revision)" } ?? "no ref"
        switch self {
        case .any: return
        case .absent:
            if current != nil { throw KbuildError(.conflict, "failed to create ref \(name): it exists (\(found))") }
        case .value(let kid):
            if current?.kid != kid { throw KbuildError(.conflict, "failed to update ref \(name): expected \(kid), found \(found)") }
        case .revision(let rev):
            if current?.revision != rev { throw KbuildError(.conflict, "failed to update ref \(name): expected revision \(rev), found \(found)") }
        }
    }
}

/// The system's state: names that point at KIDs, changed only by
/// compare-and-swap, with the full history of every name and a watch by prefix.
///
/// Lifecycle of a name: `compareAndSwap(name, to: kid, expecting: .absent)`
/// creates it (version 1); each later swap appends to its history (version 2,
/// 3, …, the release list of an app); swapping to nil deletes it, and history
/// stays. `watch(prefix:after:)` replays every change after a revision, then
/// follows live ones: a watcher that was cut off resumes from the last
/// revision it saw and misses nothing.
///
/// Two implementations: `SQLiteRefStore` (embedded, one machine) and
/// `EtcdRefStore` (many machines). Both pass `RefStoreConformance`.
public protocol RefStore: Sendable {
    /// The ref's current value, or nil.
    func get(_ name: RefName) async throws -> Ref?

    /// Current refs at or under `prefix` (all refs when nil), sorted by name.
    func list(prefix: RefName?) async throws -> [Ref]

    /// Sets `name` to `kid` (nil deletes it) if the expectation holds, else
    /// throws `.conflict` naming what was found.
    @discardableResult
    func compareAndSwap(_ name: RefName, to kid: KID?, expecting: RefExpectation, actor: String) async throws -> RefChange

    /// The changes of one ref, newest first, at most `limit` of them.
    func history(_ name: RefName, limit: Int?) async throws -> [RefChange]

    /// Changes at or under `prefix` with a revision above `after`, oldest first.
    func changes(prefix: RefName?, after: Revision, limit: Int) async throws -> [RefChange]

    /// The revision of the latest change in the store (zero when empty).
    func currentRevision() async throws -> Revision

    /// The ref as it was right after revision `at` (nil: absent then), from its permanent history.
    func get(_ name: RefName, at: Revision) async throws -> Ref?

    /// The refs at or under `prefix` as they were right after revision `at`, sorted by name.
    func list(prefix: RefName?, at: Revision) async throws -> [Ref]

    /// The changes at or under `prefix` after `after`, then live ones as they
    /// happen, until the consuming task is cancelled.
    func watch(prefix: RefName?, after: Revision) -> RefWatch
}

/// The async sequence of a watch. It does its work in the consumer's own
/// task (no background task): each `next()` returns a buffered change or
/// asks the store for newer ones, waiting between asks.
public struct RefWatch: AsyncSequence, Sendable {
    public typealias Element = RefChange
    let fetch: @Sendable (Revision) async throws -> [RefChange]
    let wait: @Sendable () async throws -> Void
    let start: Revision

    /// `fetch(after)` returns changes after a revision, oldest first; `wait`
    /// returns when there may be new ones (or after a poll interval).
    public init(after start: Revision, fetch: @escaping @Sendable (Revision) async throws -> [RefChange], wait: @escaping @Sendable () async throws -> Void) {
        self.start = start
        self.fetch = fetch
        self.wait = wait
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let watch: RefWatch
        var last: Revision
        var buffer: [RefChange] = []

        public mutating func next() async throws -> RefChange? {
            while buffer.isEmpty {
                try Task.checkCancellation()
                buffer = try await watch.fetch(last)
                if buffer.isEmpty { try await watch.wait() }
            }
            let change = buffer.removeFirst()
            last = change.revision
            return change
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(watch: self, last: start) }
}

extension RefStore {
    public func history(_ name: RefName) async throws -> [RefChange] { try await history(name, limit: nil) }

    /// Sets `name` unconditionally.
    @discardableResult
    public func set(_ name: RefName, to kid: KID, actor: String) async throws -> RefChange {
        try await compareAndSwap(name, to: kid, expecting: .any, actor: actor)
    }

    /// Removes every ref under `prefix` (their history stays) and returns how many.
    @discardableResult
    public func removeAll(under prefix: RefName, actor: String) async throws -> Int {
        var removed = 0
        for ref in try await list(prefix: prefix) {
            try await compareAndSwap(ref.name, to: nil, expecting: .any, actor: actor)
            removed += 1
        }
        return removed
    }
}
