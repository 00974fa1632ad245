import XCTest
import Foundation
import KbuildState
@testable import EtcdState
import RefStoreConformance
import KbuildCore

/// The etcd store runs the whole ref-store conformance suite against a real
/// etcd (Debian's etcd-server, started here on 127.0.0.1), each case under a
/// root of its own; then what only etcd does: a watch that etcd compacted
/// past, values that are not kbuild's, and the gateway's bad answers.
final class EtcdConformanceTests: XCTestCase {
    static let base = "/tmp/kbuild-test-etcd"

    /// One single-member etcd for the class, on free ports.
    func withEtcd(members: Int = 1, _ body: (LocalEtcd) async throws -> Void) async throws {
        try XCTSkipIf(LocalEtcd.executable == nil, "etcd-server is not installed (scripts/install-deps.sh installs it)")
        LocalEtcd.sweep(under: EtcdConformanceTests.base)
        let ports = try freePorts(members * 2)
        let etcd = LocalEtcd(dir: EtcdConformanceTests.base + "/\(getpid())-\(UUID().uuidString.prefix(6))", members: members,
                             clientPort: ports[0], peerPort: ports[members])
        defer { etcd.destroy() }
        try etcd.start()
        try await etcd.waitReady()
        try await body(etcd)
    }

    func testEveryConformanceCase() async throws {
        try await withEtcd { etcd in
            let client = try EtcdClient(etcd.spec)
            var failures: [String] = []
            for c in RefStoreConformance.Case.allCases {
                do {
                    try await RefStoreConformance.run(c, on: EtcdRefStore(etcd: client, keys: EtcdKeys(root: "t-\(c.rawValue)/")))
                } catch {
                    failures.append("\(c.rawValue): \(error)")
                }
            }
            XCTAssertEqual(failures, [], "\(RefStoreConformance.Case.allCases.count) cases")
        }
    }

    /// etcd compacts its history; kbuild's log keys keep every change, and a
    /// watch resuming from before the compaction reads them instead.
    func testAWatchFromACompactedRevisionMissesNothing() async throws {
        try await withEtcd { etcd in
            let client = try EtcdClient(etcd.spec)
            let store = EtcdRefStore(etcd: client, keys: EtcdKeys(root: "compact/"))
            let name = try RefName("apps/web/release")
            var revisions: [Revision] = []
            for i in 0..<6 { revisions.append(try await store.set(name, to: KID(hashing: Array("v\(i)".utf8)), actor: "t").revision) }
            try await client.compact(to: revisions[4].value)
            // History and reads of the past come from the log keys.
            let history = try await store.history(name), past = try await store.get(name, at: revisions[1])
            XCTAssertEqual(history.count, 6)
            XCTAssertEqual(past?.kid, KID(hashing: Array("v1".utf8)))
            // A watch from revision 0 is cancelled by etcd (compacted) and reads what it missed.
            var seen: [KID?] = []
            for try await change in store.watch(prefix: name, after: .zero) {
                seen.append(change.new)
                if seen.count == 6 { break }
            }
            XCTAssertEqual(seen, (0..<6).map { KID(hashing: Array("v\($0)".utf8)) })
            // And after the compacted ones, a live change arrives.
            let last = revisions[5]
            let got = try await withThrowingTaskGroup(of: RefChange?.self) { group in
                group.addTask {
                    for try await change in store.watch(prefix: name, after: last) { return change }
                    return nil
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(200))
                    try await client.compact(to: last.value)
                    try await store.set(name, to: KID(hashing: Array("live".utf8)), actor: "t")
                    return nil
                }
                var result: RefChange?
                for try await r in group { if let r { result = r } }
                return result
            }
            XCTAssertEqual(got?.new, KID(hashing: Array("live".utf8)))
        }
    }

    /// A value under kbuild's keys that is not kbuild's is named and skipped (history, watch) or
    /// refused with its name (a read of that ref), never a crash.
    func testAValueThatDoesNotDecodeIsNamedAndSkipped() async throws {
        try await withEtcd { etcd in
            let client = try EtcdClient(etcd.spec)
            let store = EtcdRefStore(etcd: client, keys: EtcdKeys(root: "bad/"))
            let good = try RefName("apps/a/release"), bad = try RefName("apps/b/release")
            try await store.set(good, to: KID(hashing: Array("ok".utf8)), actor: "t")
            _ = try await client.put(.init(key: Data("bad/ref/apps/b/release".utf8), value: Data("not json".utf8)))
            _ = try await client.put(.init(key: Data("bad/log/apps/b/release#0000000000000001".utf8), value: Data("{\"nonsense\":1}".utf8)))
            do {
                _ = try await store.get(bad)
                XCTFail("a ref that does not decode must be an error")
            } catch let e as KbuildError {
                XCTAssertEqual(e.code, .corrupt)
                XCTAssertTrue(e.message.contains("ref apps/b/release"), e.message)
            }
            let changes = try await store.changes(prefix: nil, after: .zero, limit: 100)
            XCTAssertEqual(changes.map(\.name), [good], "the undecodable change is skipped")
        }
    }

    /// Old node reports are dropped (their changes and records); the newest are kept, and other refs' history whole.
    func testThePrunerDropsOldNodeReportsOnly() async throws {
        try await withEtcd { etcd in
            let client = try EtcdClient(etcd.spec)
            let store = EtcdRefStore(etcd: client, keys: EtcdKeys(root: "prune/"))
            let records = EtcdRecords(etcd: client, keys: EtcdKeys(root: "prune/"))
            let status = try Schema.status("n1"), release = try RefName("apps/a/release")
            var kids: [KID] = []
            for i in 0..<30 {
                let bytes = Array("{\"report\":\(i)}".utf8)
                let kid = KID(hashing: bytes)
                try await records.putRecord(kid, bytes)
                try await store.set(status, to: kid, actor: "agent n1")
                try await store.set(release, to: KID(hashing: Array("r\(i)".utf8)), actor: "alice")
                kids.append(kid)
            }
            let dropped = try await EtcdPruner(store: store, keep: 10).prune()
            XCTAssertEqual(dropped, 20)
            let statusHistory = try await store.history(status), releaseHistory = try await store.history(release)
            XCTAssertEqual(statusHistory.map(\.new), kids.suffix(10).reversed().map { Optional($0) }, "the newest ten reports are kept")
            XCTAssertEqual(releaseHistory.count, 30, "releases keep their whole history")
            let current = try await store.get(status)
            XCTAssertEqual(current?.kid, kids.last)
            let gone = try await records.record(kids[0]), kept = try await records.record(kids[29])
            XCTAssertNil(gone, "a pruned report's record is gone")
            XCTAssertNotNil(kept)
            let again = try await EtcdPruner(store: store, keep: 10).prune()
            XCTAssertEqual(again, 0, "nothing more to drop")
        }
    }

    /// One holder at a time: the second campaigns until the first's key is gone; the first's term then
    /// writes nothing (its fenced compare-and-swap is refused), and it notices and gives the role up.
    func testAnElectionFencesTheTermItEnded() async throws {
        try await withEtcd { etcd in
            let client = try EtcdClient(etcd.spec)
            let store = EtcdRefStore(etcd: client, keys: EtcdKeys(root: "elect/"))
            let name = try RefName("nodes/n1/assignment")
            let terms = Terms()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await EtcdElection(store: store, holder: "a", ttl: 2).lead("scheduler") { term in
                        terms.add("a", term)
                        try await term.refs.set(name, to: KID(hashing: Array("a".utf8)), actor: "a")
                        try await Task.sleep(for: .seconds(3600))
                    }
                }
                while terms.get("a") == nil { try await Task.sleep(for: .milliseconds(20)) }
                group.addTask {
                    try await EtcdElection(store: store, holder: "b", ttl: 2).lead("scheduler") { term in
                        terms.add("b", term)
                        try await Task.sleep(for: .seconds(3600))
                    }
                }
                try await Task.sleep(for: .seconds(1))
                XCTAssertNil(terms.get("b"), "one holder at a time")
                // a's key goes (as when its lease runs out unseen): its term is over.
                _ = try await client.txn(.init(success: [.delete(store.keys.leader("scheduler"))]))
                let a = try XCTUnwrap(terms.get("a"))
                do {
                    try await a.refs.set(name, to: KID(hashing: Array("late".utf8)), actor: "a")
                    XCTFail("a write of an ended term must be refused")
                } catch let e as KbuildError {
                    XCTAssertEqual(e.code, .conflict)
                    XCTAssertTrue(e.message.contains("term that began at revision \(a.fence)"), e.message)
                }
                let deadline = ContinuousClock.now + .seconds(10)
                while terms.get("b") == nil && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
                let b = try XCTUnwrap(terms.get("b"), "b takes the role")
                XCTAssertGreaterThan(b.fence, a.fence)
                try await b.refs.set(name, to: KID(hashing: Array("b".utf8)), actor: "b")
                let now = try await store.get(name)
                XCTAssertEqual(now?.kid, KID(hashing: Array("b".utf8)))
                group.cancelAll()
            }
        }
    }

    /// What `--state` accepts, and what it says about a URL that is not etcd.
    func testBadStateURLsAreNamed() async throws {
        for bad in ["", "etcd://", "etcd://host", "etcd://host:notaport", "etcd://h:1,", "https://h:2379", "etcd://user@h:1"] {
            XCTAssertThrowsError(try EtcdClient(bad), bad) { error in
                XCTAssertEqual((error as? KbuildError)?.code, .invalidArgument, "\(bad): \(error)")
            }
        }
        XCTAssertEqual(try EtcdClient.parse("etcd://a:1,b:2"), ["http://a:1", "http://b:2"])
        // Nothing listening.
        let port = try freePorts(1)[0]
        do {
            _ = try await EtcdClient("etcd://127.0.0.1:\(port)").status()
            XCTFail("a closed port must be an error")
        } catch let e as KbuildError {
            XCTAssertTrue(e.message.contains("does not answer at etcd://127.0.0.1:\(port)"), e.message)
        }
        // Something that speaks HTTP but is not etcd, and something that does not speak HTTP.
        let listener = try OneShotServer(reply: "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n<html></html>")
        do {
            _ = try await EtcdClient("etcd://127.0.0.1:\(listener.port)").status()
            XCTFail("a web server must be refused")
        } catch let e as KbuildError {
            XCTAssertTrue(e.message.contains("is not an etcd v3 gateway"), e.message)
        }
        let ssh = try OneShotServer(reply: "SSH-2.0-OpenSSH_9.2\r\n")
        do {
            _ = try await EtcdClient("etcd://127.0.0.1:\(ssh.port)").status()
            XCTFail("an SSH server must be refused")
        } catch let e as KbuildError {
            XCTAssertTrue(e.message.contains("is not an etcd v3 gateway"), e.message)
        }
    }
}

/// Terms handed to the election's bodies, by holder.
final class Terms: @unchecked Sendable {
    private let lock = NSLock()
    private var byHolder: [String: LeaderTerm] = [:]
    func add(_ holder: String, _ term: LeaderTerm) { lock.withLock { byHolder[holder] = term } }
    func get(_ holder: String) -> LeaderTerm? { lock.withLock { byHolder[holder] } }
}

/// Free TCP ports on 127.0.0.1 (bound, then released).
func freePorts(_ count: Int) throws -> [Int] {
    var fds: [Int32] = []
    defer { fds.forEach { close($0) } }
    return try (0..<count).map { _ in
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        fds.append(fd)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw KbuildError(.io, "failed to find a free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

/// A TCP server on 127.0.0.1 that answers every connection with fixed bytes, then closes it.
final class OneShotServer: @unchecked Sendable {
    let port: Int
    private let fd: Int32
    private let thread: Thread

    init(reply: String) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw KbuildError(.io, "failed to listen") }
        port = Int(UInt16(bigEndian: addr.sin_port))
        let listening = fd
        thread = Thread {
            while true {
                let c = accept(listening, nil, nil)
                if c < 0 { return }
                var buffer = [UInt8](repeating: 0, count: 4096)
                _ = read(c, &buffer, buffer.count)
                _ = reply.withCString { write(c, $0, strlen($0)) }
                close(c)
            }
        }
        thread.start()
    }

    deinit { shutdown(fd, Int32(SHUT_RDWR)); close(fd) }
}
