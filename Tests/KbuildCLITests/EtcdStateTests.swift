import XCTest
import Foundation
import EtcdState

/// `kbuild up --state etcd://…` against a real etcd (Debian's etcd-server,
/// started here on 127.0.0.1 ports of the test's own): a push deploys with
/// the state and records in etcd, a control plane that lost its disk finds
/// them there, the bad `--state` values are named, and two control planes
/// share one 3-member etcd: a push to one is built by the other's worker
/// and deployed on the first's node, one etcd member killed loses no
/// acknowledged change, and the other control plane takes the scheduler
/// within its lease when the active one is killed with -9.
final class EtcdStateTests: XCTestCase {
    static let base = "/tmp/kbuild-test-etcd"

    func etcdctl(_ etcd: LocalEtcd, _ args: [String]) throws -> String {
        let r = try sh("/usr/bin/etcdctl", ["--endpoints", etcd.members.map { String($0.clientURL.dropFirst(7)) }.joined(separator: ",")] + args)
        XCTAssertEqual(r.status, 0, r.stderr)
        return r.stdout
    }

    /// `kbuild up` that is expected to stop on its own, with what it printed.
    func upThatFails(_ data: String, _ extra: [String]) throws -> Result {
        try sh("/usr/bin/timeout", ["30", kbuildBinary, "up", "--port", "0", "--router-port", "0", "--tls-port", "0", "--https-port", "0", "--nodes", "0", "--workers", "0",
                                     "--data-dir", data] + extra)
    }

    func testOnePushWithTheStateOnEtcdAndAControlPlaneThatLostItsDisk() async throws {
        let etcd = try await startEtcd(members: 1)
        let data = try tempDir(self, "etcd-one")
        let up = try startKbuildUp(self, data: data, extra: ["--state", etcd.spec])
        XCTAssertEqual(try kbuild(["stack", "create", "busybox"], dataDir: data).status, 0)
        let work = try makeApp("web", data: data)
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stderr.contains("is live"), push.stderr)
        let router = try XCTUnwrap(Int(trimmed(try String(contentsOfFile: data + "/router.url", encoding: .utf8)).split(separator: ":").last ?? ""))
        XCTAssertTrue(routed(router, host: "web.localhost").body.hasPrefix("hello from web"))
        // The state is etcd's: the release ref and its change are there, and SQLite holds nothing.
        XCTAssertTrue(try etcdctl(etcd, ["get", "kbuild/ref/apps/web/release", "--print-value-only"]).contains("\"version\":1"))
        XCTAssertEqual(try etcdctl(etcd, ["get", "--prefix", "kbuild/log/apps/web/release#", "--keys-only"]).split(separator: "\n").count, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: data + "/refs.sqlite"), "nothing goes to SQLite")
        XCTAssertEqual(try kbuild(["config:set", "web", "COLOR=teal"], dataDir: data).status, 0)

        // The control plane's disk is lost: a new data dir on the same etcd has the apps, releases and config
        // (records kept in etcd), and takes the cluster's admin token.
        kill(up.process.processIdentifier, SIGTERM)
        up.process.waitUntilExit()
        let fresh = try tempDir(self, "etcd-fresh")
        _ = try startKbuildUp(self, data: fresh, extra: ["--state", etcd.spec, "--nodes", "0", "--workers", "0"])
        XCTAssertEqual(try String(contentsOfFile: fresh + "/admin.token", encoding: .utf8), try String(contentsOfFile: data + "/admin.token", encoding: .utf8))
        let releases = try kbuild(["releases", "web"], dataDir: fresh)
        XCTAssertTrue(releases.stdout.contains("v2") && releases.stdout.contains("Deploy"), releases.stdout + releases.stderr)
        let config = try kbuild(["config", "web"], dataDir: fresh)
        XCTAssertTrue(config.stdout.contains("COLOR") && config.stdout.contains("teal"), config.stdout + config.stderr)
    }

    func testBadStateValuesAreNamed() async throws {
        let data = try tempDir(self, "etcd-bad")
        // Not a URL kbuild takes.
        var r = try upThatFails(data, ["--state", "etcd://nohost"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("want host:port"), r.stderr)
        // Something that answers HTTP but is not etcd.
        let web = try listen("127.0.0.1")
        r = try upThatFails(data, ["--state", "etcd://127.0.0.1:\(web)"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("is not an etcd v3 gateway"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: data + "/state.json"), "nothing remembered from a failed start")

        // An etcd that holds someone else's keys is refused, unless told to share it.
        let etcd = try await startEtcd(members: 1)
        _ = try etcdctl(etcd, ["put", "/registry/pods/default/nginx", "{}"])
        r = try upThatFails(data, ["--state", etcd.spec])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("keys that are not kbuild's") && r.stderr.contains("/registry/pods"), r.stderr)
        XCTAssertEqual(try etcdctl(etcd, ["get", "--prefix", "kbuild/", "--keys-only"]), "", "nothing written")
        _ = try startKbuildUp(self, data: data, extra: ["--state", etcd.spec, "--init-state", "--nodes", "0", "--workers", "0"])
        XCTAssertTrue(try etcdctl(etcd, ["get", "kbuild/meta", "--print-value-only"]).contains("\"cluster\""))

        // This data dir now remembers that cluster: an empty etcd (replaced, wiped) is refused.
        let other = try await startEtcd(members: 1)
        let second = try tempDir(self, "etcd-bad2")
        try FileManager.default.copyItem(atPath: data + "/state.json", toPath: second + "/state.json")
        r = try upThatFails(second, ["--state", other.spec])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("holds no kbuild state, but this data dir was used with kbuild cluster"), r.stderr)
        // And one that holds another kbuild cluster.
        let third = try tempDir(self, "etcd-bad3")
        _ = try startKbuildUp(self, data: third, extra: ["--state", other.spec, "--nodes", "0", "--workers", "0"])
        r = try upThatFails(second, ["--state", other.spec])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("holds kbuild cluster") && r.stderr.contains("but this data dir was used with cluster"), r.stderr)
    }

    /// `etcdctl snapshot save`, then `snapshot restore` into a new etcd: the control plane starts on it (the same
    /// kbuild cluster) with the state as it was at the snapshot.
    func testAStateRestoredFromAnEtcdSnapshot() async throws {
        let etcd = try await startEtcd(members: 1)
        let data = try tempDir(self, "etcd-restore")
        let up = try startKbuildUp(self, data: data, extra: ["--state", etcd.spec, "--nodes", "0", "--workers", "0"])
        XCTAssertEqual(try kbuild(["stack", "create", "busybox"], dataDir: data).status, 0)
        let made = try kbuild(["apps:create", "web", "--stack", "busybox"], dataDir: data)
        XCTAssertEqual(made.status, 0, made.stderr)
        XCTAssertEqual(try kbuild(["config:set", "web", "BEFORE=1"], dataDir: data).status, 0)
        let snapshot = data + "/kbuild.db"
        _ = try etcdctl(etcd, ["snapshot", "save", snapshot])
        XCTAssertEqual(try kbuild(["config:set", "web", "AFTER=1"], dataDir: data).status, 0)
        kill(up.process.processIdentifier, SIGTERM)
        up.process.waitUntilExit()
        etcd.stop()

        // Restored into a new etcd on the same addresses, as after losing every member.
        let restored = LocalEtcd(dir: EtcdStateTests.base + "/\(getpid())-\(UUID().uuidString.prefix(6))", members: 1,
                                 clientPort: Int(etcd.members[0].clientURL.split(separator: ":").last!)!,
                                 peerPort: Int(etcd.members[0].peerURL.split(separator: ":").last!)!)
        addTeardownBlock { restored.destroy() }
        let m = restored.members[0]
        let r = try sh("/usr/bin/etcdctl", ["snapshot", "restore", snapshot, "--name", m.name, "--data-dir", m.dataDir,
                                            "--initial-cluster", "\(m.name)=\(m.peerURL)", "--initial-advertise-peer-urls", m.peerURL])
        XCTAssertEqual(r.status, 0, r.stderr)
        try restored.start()
        try await restored.waitReady()
        _ = try startKbuildUp(self, data: data, extra: ["--state", restored.spec, "--nodes", "0", "--workers", "0"])
        let config = try kbuild(["config", "web", "--json"], dataDir: data)
        XCTAssertTrue(config.stdout.contains("BEFORE") && !config.stdout.contains("AFTER"), config.stdout + config.stderr)
    }

    /// etcd down at start: kbuild up waits, says so, and starts when etcd does.
    func testEtcdDownAtStartIsWaitedFor() async throws {
        try XCTSkipIf(LocalEtcd.executable == nil, "etcd-server is not installed")
        LocalEtcd.sweep(under: EtcdStateTests.base)
        let etcd = LocalEtcd(dir: EtcdStateTests.base + "/\(getpid())-\(UUID().uuidString.prefix(6))", members: 1, clientPort: freePort(), peerPort: freePort())
        addTeardownBlock { etcd.destroy() }
        let data = try tempDir(self, "etcd-wait")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: kbuildBinary)
        p.arguments = ["up", "--port", "0", "--router-port", "0", "--tls-port", "0", "--https-port", "0", "--nodes", "0", "--workers", "0", "--data-dir", data, "--state", etcd.spec]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        addTeardownBlock {
            if p.isRunning { p.terminate(); p.waitUntilExit() }
            _ = try? kbuild(["down", "--grace", "1"], dataDir: data) // its firewall table
        }
        var said = ""
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline && !said.contains("waiting for etcd") {
            said += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        }
        XCTAssertTrue(said.contains("waiting for etcd") && said.contains("does not answer"), said)
        XCTAssertTrue(p.isRunning)
        try etcd.start()
        let started = Date().addingTimeInterval(30)
        while Date() < started && !said.contains("/v1/objects/") {
            said += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        }
        XCTAssertTrue(said.contains("new kbuild cluster"), said)
        XCTAssertTrue(said.contains("/v1/objects/"), said)
    }

    func testTwoControlPlanesShareOneEtcdOfThree() async throws {
        let etcd = try await startEtcd(members: 3)
        let one = try tempDir(self, "etcd-cp1"), two = try tempDir(self, "etcd-cp2")
        // One builds, the other runs: a push to either needs both. The second's node reports with a clock five
        // minutes behind (an injected skew: libfaketime makes the Swift runtime spin here): the first's scheduler,
        // the active one, must not take it for lost.
        let cp1 = try startKbuildUp(self, data: one, extra: ["--state", etcd.spec, "--nodes", "0"])
        _ = try startKbuildUp(self, data: two, extra: ["--state", etcd.spec, "--workers", "0", "--node-name", "b"],
                              environment: ["KBUILD_CLOCK_SKEW": "-300"])
        XCTAssertEqual(try String(contentsOfFile: one + "/admin.token", encoding: .utf8), try String(contentsOfFile: two + "/admin.token", encoding: .utf8),
                       "one admin token for the cluster")
        try waitUntil("both control planes registered", timeout: 10) {
            try etcdctl(etcd, ["get", "--prefix", "kbuild/members/", "--keys-only"]).split(separator: "\n").count == 2
        }
        XCTAssertEqual(try kbuild(["stack", "create", "busybox"], dataDir: one).status, 0)
        XCTAssertEqual(try kbuild(["apps:create", "web", "--stack", "busybox"], dataDir: one).status, 0)
        let work = try makeAppSource("web")
        XCTAssertEqual(try sh(kbuildBinary, ["git:remote", "web", "--data-dir", two], cwd: work).status, 0)
        // The push goes to the second, whose repository the mirror made; the first's worker builds it.
        try waitUntil("cp2 has web's repository", timeout: 10) { FileManager.default.fileExists(atPath: two + "/git/web.git/HEAD") }
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stderr.contains("is live"), push.stderr)
        let commit = trimmed(try git(["rev-parse", "HEAD"], in: work).stdout)
        // Every control plane's router serves it, and the first's repository has the push.
        for data in [one, two] {
            let router = try XCTUnwrap(Int(trimmed(try String(contentsOfFile: data + "/router.url", encoding: .utf8)).split(separator: ":").last ?? ""))
            try waitUntil("\(data)'s router serves web", timeout: 10) { routed(router, host: "web.localhost").body.hasPrefix("hello from web") }
        }
        try waitUntil("cp1's repository has the push", timeout: 15) {
            (try? git(["--git-dir", one + "/git/web.git", "rev-parse", "main"], in: one))?.stdout.hasPrefix(commit) == true
        }
        let ps = try self.ps("web", two)
        XCTAssertEqual(ps.map(\.node), ["b"], "deployed on the second's node")
        // Longer than --node-lost-after: the scheduler keeps the skewed node (it judges reports by when it saw them).
        let pid = ps.first?.hostPID
        for _ in 0..<10 {
            try await Task.sleep(for: .seconds(1))
            let now = try self.ps("web", two)
            XCTAssertEqual(now.map(\.hostPID), [pid], "the process stays where it runs")
            XCTAssertEqual(now.map(\.state), ["healthy"])
        }

        // One etcd member of three is killed with -9 in the middle of changes through both control planes:
        // every change acknowledged is there.
        var acknowledged: [String] = []
        for i in 0..<12 {
            if i == 4 { etcd.kill("m1") }
            let r = try kbuild(["config:set", "web", "K\(i)=v\(i)"], dataDir: i % 2 == 0 ? one : two)
            if r.status == 0 { acknowledged.append("K\(i)") }
        }
        XCTAssertGreaterThanOrEqual(acknowledged.count, 11, "at most the change in flight as the member died may fail")
        let config = try kbuild(["config", "web", "--json"], dataDir: two)
        for key in acknowledged { XCTAssertTrue(config.stdout.contains("\"\(key)\""), "\(key) lost: \(config.stdout)") }
        try etcd.start("m1")

        // The active scheduler's control plane (the first to start) is killed with -9: the other takes the
        // scheduler within the lease, and schedules.
        let killed = Date()
        kill(cp1.process.processIdentifier, SIGKILL)
        cp1.process.waitUntilExit()
        try waitUntil("the second control plane leads the scheduler", timeout: 15) {
            try etcdctl(etcd, ["get", "kbuild/leader/scheduler", "--print-value-only"]).contains(two)
        }
        XCTAssertLessThan(Date().timeIntervalSince(killed), 8, "within the 5 s lease and a campaign's poll")
        XCTAssertEqual(try kbuild(["ps:scale", "web", "web=2"], dataDir: two).status, 0)
        try waitUntil("two processes on b", timeout: 20) { try self.ps("web", two).filter { $0.state == "healthy" }.count == 2 }
    }

    /// The source of an app serving www/ with busybox httpd (not created: the test picks the control plane).
    func makeAppSource(_ name: String) throws -> String {
        let work = try tempDir(self, name + "-src")
        try writeFile(work + "/Procfile", "web: ./serve.sh\n")
        try writeFile(work + "/serve.sh", "#!/bin/sh\nexec busybox httpd -f -p \"0.0.0.0:$PORT\" -h www\n", mode: 0o755)
        try writeFile(work + "/www/index.html", "hello from \(name) \(UUID().uuidString)\n")
        try git(["init", "-q"], in: work)
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "First"], in: work)
        return work
    }
}

extension XCTestCase {
    /// An etcd of `members` on free ports, destroyed at teardown (and swept at the next start after a kill -9).
    func startEtcd(members: Int) async throws -> LocalEtcd {
        try XCTSkipIf(LocalEtcd.executable == nil, "etcd-server is not installed (scripts/install-deps.sh installs it)")
        LocalEtcd.sweep(under: EtcdStateTests.base)
        let client = freePort(), peer = freePort()
        let ports = (client, peer > client && peer < client + members ? client + members : peer)
        let etcd = LocalEtcd(dir: EtcdStateTests.base + "/\(getpid())-\(UUID().uuidString.prefix(6))", members: members,
                             clientPort: ports.0, peerPort: ports.1)
        addTeardownBlock { etcd.destroy() }
        try etcd.start()
        try await etcd.waitReady()
        return etcd
    }
}
