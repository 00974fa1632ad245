public import KbuildState
import KbuildCore
import Foundation

/// The behaviour every `RefStore` must have, as a suite each implementation
/// runs (as containerd's content store tests are run by each store):
///
///     for c in RefStoreConformance.Case.allCases {
///         try await RefStoreConformance.run(c, on: makeFreshStore())
///     }
///
/// A case throws `RefStoreConformance.Failure` saying what differed. It has no
/// XCTest dependency, so any test framework (or a live check) can drive it.
public enum RefStoreConformance {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public enum Case: String, CaseIterable, Sendable {
        case missingRefIsNil
        case createAndGet
        case createConflictsWhenPresent
        case compareAndSwapByValue
        case compareAndSwapByRevision
        case deleteKeepsHistory
        case historyNewestFirstWithTimeAndActor
        case listByPrefixRespectsSegments
        case changesAfterRevision
        case revisionsIncreaseAcrossRefs
        case concurrentSwapsSerialise
        case watchReplaysThenFollows
        case watchResumesWithoutGapsOrDuplicates
        case watchFiltersByPrefix
        case updateCreatesChangesAndDeletes
        case updateLosesNoConcurrentChange
        case updateOfAnUnchangedRecordWritesNothing
        case readsAtAPastRevision
    }

    /// Records kept in memory, for the `update` cases.
    final class MemoryContent: RecordContent, @unchecked Sendable {
        private let lock = NSLock()
        private var objects: [KID: [UInt8]] = [:]
        func putRecordBytes(_ bytes: [UInt8]) throws -> KID {
            let kid = KID(hashing: bytes)
            lock.withLock { objects[kid] = bytes }
            return kid
        }
        func recordBytes(_ kid: KID, limit: Int) throws -> [UInt8] {
            guard let bytes = lock.withLock({ objects[kid] }) else { throw KbuildError(.notFound, "no object \(kid)") }
            return bytes
        }
        func putLog(path: String) throws -> KID {
            try putRecordBytes(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        }
    }

    /// A record for the `update` cases.
    struct Counter: Codable, Sendable, Equatable {
        var count: Int
        var by: [String]
    }

    static func kid(_ s: String) -> KID { KID(hashing: Array(s.utf8)) }
    static func name(_ s: String) -> RefName { try! RefName(s) }

    static func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw Failure(description: message()) }
    }

    static func expectError(_ code: KbuildError.Code, _ what: String, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as KbuildError {
            try expect(error.code == code, "\(what): want \(code) error, got \(error.code): \(error.message)")
            return
        }
        throw Failure(description: "\(what): want \(code) error, got success")
    }

    /// Runs one case against a fresh, empty store.
    public static func run(_ c: Case, on store: any RefStore) async throws {
        let a = name("apps/web/release"), b = name("apps/web2/release"), n = name("nodes/n1/assignment")
        switch c {
        case .updateCreatesChangesAndDeletes:
            let content = MemoryContent()
            let made = try await store.update(a, as: Counter.self, in: content, what: "counter", actor: "alice") { old in
                try expect(old == nil, "update of an absent ref starts from nil")
                return Counter(count: 1, by: ["alice"])
            }
            try expect(made.record == Counter(count: 1, by: ["alice"]) && made.change?.old == nil && made.change?.actor == "alice",
                       "created: \(made)")
            let next = try await store.update(a, as: Counter.self, in: content, what: "counter", actor: "bob") { old in
                Counter(count: (old?.count ?? 0) + 1, by: (old?.by ?? []) + ["bob"])
            }
            try expect(next.record?.count == 2 && next.change?.version == 2, "changed: \(next)")
            let found = try await store.current(Counter.self, at: a, in: content, what: "counter")
            try expect(found?.record == Counter(count: 2, by: ["alice", "bob"]) && found?.ref.version == 2, "current: \(String(describing: found))")
            let gone = try await store.update(a, as: Counter.self, in: content, what: "counter", actor: "carol") { _ in nil }
            try expect(gone.record == nil && gone.change?.new == nil, "deleted: \(gone)")
            try expect(try await store.get(a) == nil, "an update to nil deletes the ref")
            try expect(try await store.history(a).count == 3, "history keeps create, change and delete")

        case .updateLosesNoConcurrentChange:
            let content = MemoryContent()
            let workers = 8, rounds = 5
            try await withThrowingTaskGroup(of: Void.self) { group in
                for w in 0..<workers {
                    group.addTask {
                        for r in 0..<rounds {
                            try await store.update(a, as: Counter.self, in: content, what: "counter", actor: "w\(w)", attempts: 1000) { old in
                                Counter(count: (old?.count ?? 0) + 1, by: (old?.by ?? []) + ["\(w).\(r)"])
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let final = try await store.current(Counter.self, at: a, in: content, what: "counter")
            try expect(final?.record.count == workers * rounds && Set(final?.record.by ?? []).count == workers * rounds,
                       "every update lands once: \(final?.record.count ?? 0) of \(workers * rounds)")

        case .updateOfAnUnchangedRecordWritesNothing:
            let content = MemoryContent()
            try await store.update(a, as: Counter.self, in: content, what: "counter", actor: "t") { _ in Counter(count: 1, by: []) }
            let before = try await store.currentRevision()
            let same = try await store.update(a, as: Counter.self, in: content, what: "counter", actor: "t") { old in old }
            try expect(same.change == nil && same.record == Counter(count: 1, by: []), "no change: \(same)")
            try expect(try await store.currentRevision() == before, "an unchanged record moves no revision")
            let absent = try await store.update(b, as: Counter.self, in: content, what: "counter", actor: "t") { _ in nil }
            let stillAbsent = try await store.get(b) == nil
            try expect(absent.change == nil && stillAbsent, "deleting an absent ref writes nothing")

        case .missingRefIsNil:
            try expect(try await store.get(a) == nil, "get of a missing ref should be nil")
            try expect(try await store.currentRevision() == .zero, "an empty store is at revision 0")

        case .createAndGet:
            let change = try await store.compareAndSwap(a, to: kid("v1"), expecting: .absent, actor: "alice")
            let ref = try await store.get(a)
            try expect(ref?.kid == kid("v1") && ref?.version == 1, "created ref: \(String(describing: ref))")
            try expect(ref?.revision == change.revision, "ref revision \(String(describing: ref?.revision)) vs change \(change.revision)")
            try expect(change.old == nil && change.new == kid("v1") && change.actor == "alice", "change: \(change)")

        case .createConflictsWhenPresent:
            try await store.compareAndSwap(a, to: kid("v1"), expecting: .absent, actor: "t")
            try await expectError(.conflict, "create over an existing ref") {
                try await store.compareAndSwap(a, to: kid("v2"), expecting: .absent, actor: "t")
            }
            try expect(try await store.get(a)?.kid == kid("v1"), "a lost swap must not change the ref")

        case .compareAndSwapByValue:
            try await store.compareAndSwap(a, to: kid("v1"), expecting: .absent, actor: "t")
            try await store.compareAndSwap(a, to: kid("v2"), expecting: .value(kid("v1")), actor: "t")
            do {
                try await store.compareAndSwap(a, to: kid("v3"), expecting: .value(kid("v1")), actor: "t")
                throw Failure(description: "a swap expecting a stale value must fail")
            } catch let e as KbuildError {
                try expect(e.code == .conflict, "want conflict, got \(e.code)")
                try expect(e.message.contains(kid("v2").description), "the conflict should name what was found: \(e.message)")
            }
            try expect(try await store.get(a)?.version == 2, "version after two sets")
            try await expectError(.conflict, "swap of a missing ref expecting a value") {
                try await store.compareAndSwap(b, to: kid("x"), expecting: .value(kid("v1")), actor: "t")
            }

        case .compareAndSwapByRevision:
            let first = try await store.compareAndSwap(a, to: kid("v1"), expecting: .absent, actor: "t")
            try await store.compareAndSwap(a, to: kid("v2"), expecting: .revision(first.revision), actor: "t")
            try await expectError(.conflict, "swap at a stale revision") {
                try await store.compareAndSwap(a, to: kid("v3"), expecting: .revision(first.revision), actor: "t")
            }

        case .deleteKeepsHistory:
            try await store.compareAndSwap(a, to: kid("v1"), expecting: .absent, actor: "t")
            let del = try await store.compareAndSwap(a, to: nil, expecting: .value(kid("v1")), actor: "t")
            try expect(del.new == nil && del.old == kid("v1"), "delete change: \(del)")
            try expect(try await store.get(a) == nil, "deleted ref must be gone")
            try expect(try await store.history(a).count == 2, "history keeps the create and the delete")
            try await expectError(.notFound, "delete of a missing ref") {
                try await store.compareAndSwap(b, to: nil, expecting: .any, actor: "t")
            }

        case .historyNewestFirstWithTimeAndActor:
            let before = Date().addingTimeInterval(-1)
            for (i, who) in ["alice", "bob", "carol"].enumerated() {
                try await store.set(a, to: kid("v\(i)"), actor: who)
            }
            let h = try await store.history(a)
            try expect(h.map(\.actor) == ["carol", "bob", "alice"], "history order: \(h.map(\.actor))")
            try expect(h.map(\.version) == [3, 2, 1], "history versions: \(h.map(\.version))")
            try expect(h[0].old == kid("v1") && h[0].new == kid("v2"), "history links old and new values")
            try expect(h.allSatisfy { $0.time >= before && $0.time <= Date().addingTimeInterval(1) }, "history times")
            try expect(try await store.history(a, limit: 1).count == 1, "history limit")

        case .listByPrefixRespectsSegments:
            try await store.set(a, to: kid("1"), actor: "t")
            try await store.set(b, to: kid("2"), actor: "t")
            try await store.set(n, to: kid("3"), actor: "t")
            let web = try await store.list(prefix: name("apps/web"))
            try expect(web.map(\.name) == [a], "apps/web must not include apps/web2: \(web.map(\.name))")
            try expect(try await store.list(prefix: name("apps")).map(\.name) == [a, b], "list apps")
            try expect(try await store.list(prefix: nil).count == 3, "list all")
            try expect(try await store.list(prefix: a).map(\.name) == [a], "a prefix matches the ref itself")

        case .readsAtAPastRevision:
            let r1 = try await store.set(a, to: kid("1"), actor: "t").revision
            let r2 = try await store.set(b, to: kid("2"), actor: "t").revision
            let r3 = try await store.set(a, to: kid("3"), actor: "t").revision
            let r4 = try await store.compareAndSwap(b, to: nil, expecting: .any, actor: "t").revision
            try await store.set(n, to: kid("4"), actor: "t")
            try expect(try await store.get(a, at: .zero) == nil, "nothing at revision 0")
            let a1 = try await store.get(a, at: r1), a2 = try await store.get(a, at: r2), a3 = try await store.get(a, at: r3)
            try expect(a1?.kid == kid("1") && a1?.version == 1 && a2?.kid == kid("1") && a2?.revision == r1, "a at r1, r2: \(String(describing: a1)) \(String(describing: a2))")
            try expect(a3?.kid == kid("3") && a3?.version == 2, "a at r3: \(String(describing: a3))")
            try expect(try await store.get(b, at: r4) == nil, "b was deleted at r4")
            let apps2 = try await store.list(prefix: name("apps"), at: r2)
            try expect(apps2.map(\.name) == [a, b] && apps2.map(\.kid) == [kid("1"), kid("2")], "apps at r2: \(apps2)")
            let apps4 = try await store.list(prefix: name("apps"), at: r4)
            try expect(apps4.map(\.name) == [a] && apps4[0].kid == kid("3"), "apps at r4 (b deleted, n not under apps): \(apps4)")
            try expect(try await store.list(prefix: name("apps/web"), at: r3).map(\.name) == [a], "a prefix at a revision respects segments")
            try expect(try await store.list(prefix: nil, at: r4).count == 1, "everything at r4")
            try expect(try await store.list(prefix: nil, at: try await store.currentRevision()) == (try await store.list(prefix: nil)),
                       "at the current revision is now")

        case .changesAfterRevision:
            let c1 = try await store.set(a, to: kid("1"), actor: "t")
            try await store.set(n, to: kid("2"), actor: "t")
            try await store.set(a, to: kid("3"), actor: "t")
            let after = try await store.changes(prefix: name("apps"), after: c1.revision, limit: 100)
            try expect(after.count == 1 && after[0].new == kid("3"), "changes after \(c1.revision): \(after)")
            try expect(try await store.changes(prefix: nil, after: .zero, limit: 2).count == 2, "changes limit")

        case .revisionsIncreaseAcrossRefs:
            var last = Revision.zero
            for i in 0..<10 {
                let c = try await store.set(i % 2 == 0 ? a : n, to: kid("\(i)"), actor: "t")
                try expect(c.revision > last, "revision \(c.revision) after \(last)")
                last = c.revision
            }
            try expect(try await store.currentRevision() == last, "current revision")

        case .concurrentSwapsSerialise:
            try await store.compareAndSwap(a, to: kid("0"), expecting: .absent, actor: "t")
            let workers = 8, rounds = 5
            let wins = try await withThrowingTaskGroup(of: Int.self) { group in
                for w in 0..<workers {
                    group.addTask {
                        var won = 0
                        for r in 0..<rounds {
                            while true {
                                let cur = try await store.get(a)!
                                do {
                                    try await store.compareAndSwap(a, to: kid("\(w)-\(r)"), expecting: .revision(cur.revision), actor: "w\(w)")
                                    won += 1
                                    break
                                } catch let e as KbuildError where e.code == .conflict {
                                    continue
                                }
                            }
                        }
                        return won
                    }
                }
                return try await group.reduce(0, +)
            }
            try expect(wins == workers * rounds, "every worker eventually wins each round: \(wins)")
            let final = try await store.get(a)!
            try expect(final.version == Int64(1 + workers * rounds), "no lost update: version \(final.version)")
            let h = try await store.history(a)
            for (newer, older) in zip(h, h.dropFirst()) {
                try expect(newer.old == older.new, "history is a chain: \(older.revision) -> \(newer.revision)")
            }

        case .watchReplaysThenFollows:
            let start = try await store.currentRevision()
            try await store.set(a, to: kid("1"), actor: "t")
            let got = try await withThrowingTaskGroup(of: [RefChange].self) { group in
                group.addTask {
                    var seen: [RefChange] = []
                    for try await change in store.watch(prefix: name("apps"), after: start) {
                        seen.append(change)
                        if seen.count == 2 { break }
                    }
                    return seen
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(100))
                    try await store.set(a, to: kid("2"), actor: "t")
                    return []
                }
                var all: [RefChange] = []
                for try await part in group { all += part }
                return all
            }
            try expect(got.map(\.new) == [kid("1"), kid("2")], "watch saw \(got.map(\.new))")

        case .watchResumesWithoutGapsOrDuplicates:
            for i in 0..<5 { try await store.set(a, to: kid("\(i)"), actor: "t") }
            var seen: [RefChange] = []
            for try await change in store.watch(prefix: nil, after: .zero) {
                seen.append(change)
                if seen.count == 2 { break }
            }
            // Disconnected; more changes happen; resume from the last revision seen.
            for i in 5..<8 { try await store.set(a, to: kid("\(i)"), actor: "t") }
            for try await change in store.watch(prefix: nil, after: seen.last!.revision) {
                seen.append(change)
                if seen.count == 8 { break }
            }
            try expect(seen.map(\.new) == (0..<8).map { kid("\($0)") }, "resumed watch saw \(seen.map { $0.new?.short ?? "nil" })")

        case .watchFiltersByPrefix:
            try await store.set(n, to: kid("n"), actor: "t")
            try await store.set(b, to: kid("b"), actor: "t")
            try await store.set(a, to: kid("a"), actor: "t")
            var seen: [RefName] = []
            for try await change in store.watch(prefix: name("apps/web"), after: .zero) {
                seen.append(change.name)
                break
            }
            try expect(seen == [a], "watch apps/web saw \(seen)")
        }
    }
}
