import XCTest
import Foundation
import Synchronization
import KbuildState
@testable import EtcdState
import KbuildCore

/// Concurrent reads and compare-and-swaps of two refs by four clients, each
/// starting at another member of a 3-member etcd, while members are killed
/// with -9 and started again; the history is then checked to be
/// linearizable (Wing and Gong's search with Lowe's memoisation, as
/// Porcupine does it, over sets of states so that a swap whose answer was
/// lost may or may not have happened).
final class EtcdLinearizabilityTests: XCTestCase {
    enum Kind: Sendable {
        case get(found: KID?)
        case swap(expecting: KID?, to: KID, outcome: Outcome)
    }
    enum Outcome: Sendable { case ok, conflict, unknown }
    struct Op: Sendable {
        let key: Int
        let kind: Kind
        let call: Int64
        /// Nil: no answer (the swap may or may not have happened, at any time after its call).
        let ret: Int64?
    }

    func testSwapsUnderMemberKillsAreLinearizable() async throws {
        try XCTSkipIf(LocalEtcd.executable == nil, "etcd-server is not installed (scripts/install-deps.sh installs it)")
        LocalEtcd.sweep(under: EtcdConformanceTests.base)
        let ports = try freePorts(6)
        let etcd = LocalEtcd(dir: EtcdConformanceTests.base + "/\(getpid())-\(UUID().uuidString.prefix(6))", members: 3,
                             clientPort: ports[0], peerPort: ports[3])
        addTeardownBlock { etcd.destroy() }
        try etcd.start()
        try await etcd.waitReady()
        let names = try [RefName("apps/a/release"), RefName("apps/b/release")]
        let recorder = Recorder()
        let origin = recorder.origin
        let members = etcd.members.map { String($0.clientURL.dropFirst(7)) }
        let end = ContinuousClock.now + .seconds(9)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in 0..<4 {
                // Each client tries the members in its own order.
                let order = (0..<3).map { members[($0 + c) % 3] }
                let store = EtcdRefStore(etcd: try EtcdClient("etcd://" + order.joined(separator: ",")), keys: EtcdKeys(root: "lin/"))
                group.addTask {
                    var seen: [KID?] = [nil, nil]
                    var n = 0
                    while ContinuousClock.now < end {
                        let key = Int.random(in: 0...1)
                        let started = ContinuousClock.now
                        let call = recorder.now()
                        if Bool.random() {
                            // A read that failed had no effect: it is not part of the history.
                            do {
                                let found = try await store.get(names[key])?.kid
                                seen[key] = found
                                recorder.add(Op(key: key, kind: .get(found: found), call: call, ret: recorder.now()))
                            } catch {}
                        } else {
                            n += 1
                            let next = KID(hashing: Array("c\(c)-\(n)".utf8))
                            let expecting = seen[key]
                            var outcome = Outcome.ok
                            do {
                                try await store.compareAndSwap(names[key], to: next, expecting: expecting.map { .value($0) } ?? .absent, actor: "c\(c)")
                                seen[key] = next
                            } catch let e as KbuildError where e.code == .conflict {
                                outcome = .conflict
                                seen[key] = try? await store.get(names[key])?.kid
                            } catch {
                                outcome = .unknown
                            }
                            let op = Op(key: key, kind: .swap(expecting: expecting, to: next, outcome: outcome), call: call,
                                        ret: outcome == .unknown ? nil : recorder.now())
                            recorder.add(op)
                        }
                        let took = ContinuousClock.now - started
                        recorder.took(took)
                        try await Task.sleep(for: .milliseconds(Int.random(in: 2...15)))
                    }
                }
            }
            group.addTask {
                // Faults: the leader is killed and brought back, twice (one member down at a time: quorum holds).
                for at in [2, 5] {
                    try await Task.sleep(until: origin + .seconds(at))
                    let leader = await etcd.leader() ?? "m1"
                    etcd.kill(leader)
                    recorder.fault("killed \(leader), the leader")
                    try await Task.sleep(until: origin + .seconds(at + 2))
                    try etcd.start(leader)
                }
            }
            try await group.waitForAll()
        }
        let ops = recorder.history.withLock { $0 }
        let swaps = ops.filter { if case .swap(_, _, .ok) = $0.kind { return true } else { return false } }.count
        XCTAssertGreaterThan(swaps, 100, "enough successful swaps to mean something: \(ops.count) operations")
        for key in 0...1 {
            let mine = ops.filter { $0.key == key }
            XCTAssertTrue(EtcdLinearizabilityTests.linearizable(mine), "the history of \(names[key]) (\(mine.count) operations) is not linearizable")
        }
        // Nothing stalls longer than an election and a retry on the next member (etcd's own request timeout is 7 s).
        XCTAssertLessThan(recorder.slowest.withLock { $0 }, .seconds(10))
        XCTAssertEqual(recorder.faults.withLock { $0.count }, 2)
        print("linearizability: \(recorder.faults.withLock { $0 }.joined(separator: ", ")); \(ops.count) operations, \(swaps) successful swaps, slowest \(recorder.slowest.withLock { $0 })")
    }

    /// The history as the clients make it, with times from one origin.
    final class Recorder: Sendable {
        let origin = ContinuousClock.now
        let history = Mutex<[Op]>([])
        let slowest = Mutex<Duration>(.zero)
        func now() -> Int64 {
            let d = ContinuousClock.now - origin
            return d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
        }
        func add(_ op: Op) { history.withLock { $0.append(op) } }
        func took(_ d: Duration) { slowest.withLock { $0 = max($0, d) } }
        let faults = Mutex<[String]>([])
        func fault(_ what: String) { faults.withLock { $0.append(what) } }
    }

    /// Whether some order of `ops`, each taking effect between its call and its return, is a legal
    /// history of one register with compare-and-swap. States are sets of possible values.
    static func linearizable(_ ops: [Op]) -> Bool {
        typealias State = Set<KID?>
        func step(_ state: State, _ op: Op) -> State {
            switch op.kind {
            case .get(let found):
                return state.contains(found) ? [found] : []
            case .swap(let expecting, let to, let outcome):
                let matches = state.contains(expecting)
                switch outcome {
                case .ok: return matches ? [to] : []
                case .conflict: return state.subtracting([expecting])
                case .unknown: return matches ? state.union([to]) : state
                }
            }
        }
        // Entries: calls and returns in time order (a call before a return at the same instant).
        struct Entry { let op: Int; let isCall: Bool; let time: Int64 }
        var entries: [Entry] = []
        for (i, op) in ops.enumerated() {
            entries.append(Entry(op: i, isCall: true, time: op.call))
            if let r = op.ret { entries.append(Entry(op: i, isCall: false, time: r)) }
        }
        entries.sort { $0.time != $1.time ? $0.time < $1.time : ($0.isCall && !$1.isCall) }
        // A doubly linked list over the entries, so a linearized op's call and return can be lifted out and put back.
        var next = Array(1...entries.count), prev = Array(-1..<(entries.count - 1))
        var head = entries.isEmpty ? entries.count : 0
        var returnOf = [Int?](repeating: nil, count: ops.count), callOf = [Int](repeating: 0, count: ops.count)
        for (i, e) in entries.enumerated() { if e.isCall { callOf[e.op] = i } else { returnOf[e.op] = i } }
        func unlink(_ i: Int) {
            if prev[i] >= 0 { next[prev[i]] = next[i] } else { head = next[i] }
            if next[i] < entries.count { prev[next[i]] = prev[i] }
        }
        func relink(_ i: Int) {
            if prev[i] >= 0 { next[prev[i]] = i } else { head = i }
            if next[i] < entries.count { prev[next[i]] = i }
        }
        struct Seen: Hashable { let done: [UInt64]; let state: State }
        var done = [UInt64](repeating: 0, count: (ops.count + 63) / 64)
        var cache = Set<Seen>()
        var stack: [(op: Int, state: State)] = []
        var state: State = [nil]
        var at = head
        while head < entries.count {
            if at < entries.count, entries[at].isCall {
                let e = entries[at]
                let after = step(state, ops[e.op])
                var marked = done
                marked[e.op / 64] |= 1 << UInt64(e.op % 64)
                if !after.isEmpty && cache.insert(Seen(done: marked, state: after)).inserted {
                    stack.append((e.op, state))
                    state = after
                    done = marked
                    if let r = returnOf[e.op] { unlink(r) }
                    unlink(callOf[e.op])
                    at = head
                } else {
                    at = next[at]
                }
            } else {
                // A return whose op is not linearized yet (or the end, with calls left): undo the last choice, try the next.
                guard let (op, before) = stack.popLast() else { return false }
                state = before
                done[op / 64] &= ~(1 << UInt64(op % 64))
                relink(callOf[op])
                if let r = returnOf[op] { relink(r) }
                at = next[callOf[op]]
            }
        }
        return true
    }

    /// The checker itself: it accepts a legal history and refuses a stale read and a lost swap.
    func testTheCheckerRefusesWhatIsNotLinearizable() {
        let a = KID(hashing: Array("a".utf8)), b = KID(hashing: Array("b".utf8))
        let legal = [Op(key: 0, kind: .swap(expecting: nil, to: a, outcome: .ok), call: 0, ret: 10),
                     Op(key: 0, kind: .get(found: a), call: 5, ret: 20),
                     Op(key: 0, kind: .swap(expecting: a, to: b, outcome: .ok), call: 21, ret: 30),
                     Op(key: 0, kind: .swap(expecting: a, to: b, outcome: .conflict), call: 31, ret: 40)]
        XCTAssertTrue(Self.linearizable(legal))
        // A read after b was written that still sees a.
        let stale = legal + [Op(key: 0, kind: .get(found: a), call: 41, ret: 50)]
        XCTAssertFalse(Self.linearizable(stale))
        // Two swaps from the same value both succeeding.
        let lost = [Op(key: 0, kind: .swap(expecting: nil, to: a, outcome: .ok), call: 0, ret: 10),
                    Op(key: 0, kind: .swap(expecting: nil, to: b, outcome: .ok), call: 11, ret: 20)]
        XCTAssertFalse(Self.linearizable(lost))
        // A swap with no answer may have happened or not.
        let maybe = [Op(key: 0, kind: .swap(expecting: nil, to: a, outcome: .unknown), call: 0, ret: nil),
                     Op(key: 0, kind: .get(found: a), call: 20, ret: 30)]
        XCTAssertTrue(Self.linearizable(maybe))
    }
}
