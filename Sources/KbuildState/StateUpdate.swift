import KbuildCore

/// What `update` found at a ref: its record and the ref itself.
public struct Current<Record: Sendable>: Sendable {
    public var record: Record
    public var ref: Ref
}

extension RefStore {
    /// The record a ref names, decoded, with the ref; nil when the ref is absent.
    public func current<T: Decodable & Sendable>(_ type: T.Type, at name: RefName, in content: some RecordContent,
                                                 what: String) async throws -> Current<T>? {
        guard let ref = try await get(name) else { return nil }
        return await Current(record: try Records.get(type, ref.kid, from: content, what: what), ref: ref)
    }

    /// Changes the record at `name` by compare-and-swap: `change` gets the
    /// current record (nil when the ref is absent) and returns the next (nil
    /// deletes the ref). When another writer got there first, it runs again
    /// on what that writer left, so no change is ever lost; after `attempts`
    /// lost races it throws `.conflict`. `change` may run more than once, so
    /// it must not have effects of its own. Returns the record written (nil
    /// after a delete) and the change; a `change` that returns what it got
    /// writes nothing and returns a nil change.
    @discardableResult
    public func update<T: Codable & Sendable & Equatable>(
        _ name: RefName, as type: T.Type, in content: some RecordContent, what: String, actor: String, attempts: Int = 20,
        _ change: (T?) async throws -> T?
    ) async throws -> (record: T?, change: RefChange?) {
        for _ in 0..<attempts {
            let found = try await current(type, at: name, in: content, what: what)
            let next = try await change(found?.record)
            if next == found?.record { return (next, nil) }
            let kid: KID? = if let next { try await Records.put(next, in: content) } else { nil }
            do {
                let done = try await compareAndSwap(name, to: kid, expecting: found.map { .value($0.ref.kid) } ?? .absent, actor: actor)
                return (next, done)
            } catch let e as KbuildError where e.code == .conflict {
                continue
            }
        }
        throw KbuildError(.conflict, "failed to change \(name): \(attempts) concurrent changes won the race; try again")
    }
}
