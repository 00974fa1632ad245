public import KbuildCore
import Foundation

/// The ref store as it was right after one revision, read-only: what every
/// reader (`ClusterReader`, `ReleaseStore`, the tracer) sees when the
/// dashboard or the API is asked `?at=N`. It reads the store's permanent
/// history, so the same code that shows the present shows the past.
public struct RefStoreAsOf: RefStore {
    public let base: any RefStore
    public let revision: Revision

    public init(_ base: any RefStore, at revision: Revision) {
        self.base = base
        self.revision = revision
    }

    /// A view at `text` (a revision number from a URL), checked against the store's range.
    public static func parse(_ text: String, of base: any RefStore) async throws -> RefStoreAsOf {
        let now = try await base.currentRevision()
        guard let n = Int64(text), n >= 1 else {
            throw KbuildError(.invalidArgument, "invalid revision \(text.debugQuoted): a number from 1 to \(now.value)")
        }
        guard n <= now.value else {
            throw KbuildError(.notFound, "revision \(n) is out of range: the store is at revision \(now.value)")
        }
        return RefStoreAsOf(base, at: Revision(n))
    }

    public func get(_ name: RefName) async throws -> Ref? { try await base.get(name, at: revision) }
    public func list(prefix: RefName?) async throws -> [Ref] { try await base.list(prefix: prefix, at: revision) }
    public func get(_ name: RefName, at: Revision) async throws -> Ref? { try await base.get(name, at: min(at, revision)) }
    public func list(prefix: RefName?, at: Revision) async throws -> [Ref] { try await base.list(prefix: prefix, at: min(at, revision)) }

    public func compareAndSwap(_ name: RefName, to kid: KID?, expecting: RefExpectation, actor: String) async throws -> RefChange {
        throw KbuildError(.conflict, "failed to change \(name): this is the state as of revision \(revision), which is read-only")
    }

    public func history(_ name: RefName, limit: Int?) async throws -> [RefChange] {
        let then = try await base.history(name, limit: nil).filter { $0.revision <= revision }
        return limit.map { Array(then.prefix($0)) } ?? then
    }

    public func changes(prefix: RefName?, after: Revision, limit: Int) async throws -> [RefChange] {
        guard after < revision else { return [] }
        return try await base.changes(prefix: prefix, after: after, limit: limit).filter { $0.revision <= revision }
    }

    public func currentRevision() async throws -> Revision { revision }

    /// The past does not change: a watch ends after what was there.
    public func watch(prefix: RefName?, after: Revision) -> RefWatch {
        RefWatch(after: after, fetch: { last in try await self.changes(prefix: prefix, after: last, limit: 1000) },
                 wait: { throw KbuildError(.conflict, "the state as of revision \(revision) does not change: nothing to watch") })
    }
}
