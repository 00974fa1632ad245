import XCTest
import Foundation

/// Objects being written: `.tmp-*` files in the fan-out directories.
/// Bytes of objects being written: `.tmp-` files in the fan-out dirs and `.tmp-` packs.
func stagedBytes(_ data: String) -> Int {
    let packs = data + "/keg/packs"
    return ((try? FileManager.default.contentsOfDirectory(atPath: packs)) ?? []).filter { $0.hasPrefix(".tmp-") }.reduce(0) { total, name in
        total + (((try? FileManager.default.attributesOfItem(atPath: packs + "/" + name))?[.size] as? Int) ?? 0)
    }
}

func stagedCount(_ data: String) -> Int {
    var n = ((try? FileManager.default.contentsOfDirectory(atPath: data + "/keg/packs")) ?? []).filter { $0.hasPrefix(".tmp-") }.count
    for dir in (try? FileManager.default.contentsOfDirectory(atPath: data + "/keg/objects")) ?? [] {
        n += ((try? FileManager.default.contentsOfDirectory(atPath: data + "/keg/objects/" + dir)) ?? []).filter { $0.hasPrefix(".tmp-") }.count
    }
    return n
}

final class KegCLITests: XCTestCase {
    /// The issue's acceptance check: `keg put /usr/lib`, `get` into a new
    /// directory, and `diff -r` (plus modes and symlink targets) compare equal.
    func testPutUsrLibThenGetComparesEqual() throws {
        let dir = try tempDir(self, "usrlib")
        let data = dir + "/data"
        let put = try kbuild(["keg", "put", "/usr/lib"], dataDir: data)
        XCTAssertEqual(put.status, 0, put.stderr)
        let kid = put.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(kid.hasPrefix("K-") && kid.count == 66, kid)
        let get = try kbuild(["keg", "get", String(kid.prefix(12)), dir + "/restored"], dataDir: data)
        XCTAssertEqual(get.status, 0, get.stderr)
        let diff = try sh("/usr/bin/diff", ["-r", "--no-dereference", "/usr/lib", dir + "/restored"])
        XCTAssertEqual(diff.status, 0, String(diff.stdout.prefix(2000)))
        XCTAssertEqual(try treeListing("/usr/lib"), try treeListing(dir + "/restored"), "modes, types and symlink targets")
        let fsck = try kbuild(["keg", "fsck"], dataDir: data)
        XCTAssertEqual(fsck.status, 0, fsck.stdout)
        XCTAssertTrue(fsck.stdout.contains(" 0 problems"), fsck.stdout)
    }

    /// kill -9 in the middle of a put: no half-object is ever visible, fsck is
    /// clean, and the next put and gc recover.
    func testKillDuringPutLeavesNothingHalfWritten() throws {
        let dir = try tempDir(self, "kill")
        let data = dir + "/data"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: kbuildBinary)
        p.arguments = ["keg", "put", "/usr/lib", "--data-dir", data]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Wait (bounded) until it is writing objects, then kill it.
        let deadline = Date().addingTimeInterval(60)
        var staged = 0
        while Date() < deadline && p.isRunning {
            staged = stagedBytes(data)
            if staged >= 200 << 20 { break }
            usleep(20_000)
        }
        XCTAssertTrue(p.isRunning, "put finished before it could be killed; staged \(staged)")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .uncaughtSignal)

        let fsck = try kbuild(["keg", "fsck"], dataDir: data)
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
        XCTAssertTrue(fsck.stdout.contains(" 0 problems"), fsck.stdout)
        let gc = try kbuild(["keg", "gc", "--grace", "0s"], dataDir: data)
        XCTAssertEqual(gc.status, 0, gc.stderr)
        XCTAssertEqual(stagedCount(data), 0, "gc sweeps what the killed put left staged")

        let small = dir + "/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        try Data("after the crash\n".utf8).write(to: URL(fileURLWithPath: small + "/f"))
        let put = try kbuild(["keg", "put", small], dataDir: data)
        XCTAssertEqual(put.status, 0, put.stderr)
        let get = try kbuild(["keg", "get", put.stdout.trimmingCharacters(in: .whitespacesAndNewlines), dir + "/out"], dataDir: data)
        XCTAssertEqual(get.status, 0, get.stderr)
        XCTAssertEqual(try String(contentsOfFile: dir + "/out/f", encoding: .utf8), "after the crash\n")
    }

    /// An unreadable file (as an unprivileged user: root reads anything) is a
    /// clear error naming the file, and nothing is stored.
    func testUnreadableFileIsAClearErrorAndStoresNothing() throws {
        let dir = try tempDir(self, "unreadable")
        XCTAssertEqual(chmod(dir, 0o755), 0)
        let src = dir + "/src", data = dir + "/data"
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        try Data("readable".utf8).write(to: URL(fileURLWithPath: src + "/ok"))
        try Data("secret".utf8).write(to: URL(fileURLWithPath: src + "/secret"))
        XCTAssertEqual(chmod(src + "/secret", 0), 0)
        XCTAssertEqual(chown(data, 65534, 65534), 0)
        let r = try sh("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", kbuildBinary, "keg", "put", src, "--data-dir", data])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("\(src)/secret") && r.stderr.contains("EACCES"), r.stderr)
        let stats = try kbuild(["keg", "stats", "--json"], dataDir: data)
        XCTAssertTrue(stats.stdout.contains("\"objects\" : 0"), stats.stdout)
    }

    func testBadInputGetsClearErrors() throws {
        let dir = try tempDir(self, "bad")
        let data = dir + "/data"
        let cases: [([String], String)] = [
            (["keg", "get", "K-00000000", dir + "/x"], "no object has this prefix"),
            (["keg", "checkout", "K-" + String(repeating: "0", count: 64), dir + "/x"], "not in the Keg"),
            (["keg", "cat", "K-abc"], "want K- and 8 to 64 lowercase hex digits"),
            (["keg", "ls", "K-" + String(repeating: "0", count: 64)], "not in the Keg"),
            (["keg", "put", "/dev/null"], "character device"),
            (["keg", "put", dir + "/missing"], "ENOENT"),
            (["ref", "set", "apps/../etc", "K-" + String(repeating: "0", count: 64)], "segment . or .."),
            (["ref", "set", "/abs", "K-" + String(repeating: "0", count: 64)], "absolute path"),
            (["ref", "get", "apps/web/release"], "no such ref"),
            (["keg", "gc", "--grace", "soon"], "failed to parse duration"),
        ]
        for (args, message) in cases {
            let r = try kbuild(args, dataDir: data)
            XCTAssertNotEqual(r.status, 0, args.joined(separator: " "))
            XCTAssertTrue(r.stderr.contains(message), "\(args.joined(separator: " ")): \(r.stderr)")
        }
        let kid = "K-" + String(repeating: "1", count: 64)
        XCTAssertEqual(try kbuild(["ref", "set", "apps/web/release", kid, "--create"], dataDir: data).status, 0)
        let again = try kbuild(["ref", "set", "apps/web/release", kid, "--create"], dataDir: data)
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("failed to create ref apps/web/release: it exists"), again.stderr)
        let stale = try kbuild(["ref", "set", "apps/web/release", kid, "--expect", "K-" + String(repeating: "2", count: 64)], dataDir: data)
        XCTAssertTrue(stale.stderr.contains("expected K-2222"), stale.stderr)
    }

    /// A streamed large file gets the same KID (its sha256sum) whether the
    /// whole-file and chunk hashes run interleaved (SHA-NI) or portably.
    func testLargeFileKIDIsItsSHA256OnBothHashPaths() throws {
        let dir = try tempDir(self, "sha")
        var bytes = [UInt8](repeating: 0, count: 40 << 20)
        var state: UInt64 = 0x9E3779B97F4A7C15
        for i in bytes.indices { state = state &* 6364136223846793005 &+ 1442695040888963407; bytes[i] = UInt8(truncatingIfNeeded: state >> 33) }
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/big"))
        let sum = try sh("/usr/bin/sha256sum", [dir + "/big"]).stdout.prefix(64)
        let fast = try kbuild(["keg", "put", dir + "/big"], dataDir: dir + "/a")
        let portable = try kbuild(["keg", "put", dir + "/big"], dataDir: dir + "/b", env: ["KBUILD_NO_SHA_NI": "1"])
        XCTAssertEqual(fast.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "K-" + sum, fast.stderr)
        XCTAssertEqual(portable.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "K-" + sum, portable.stderr)
        XCTAssertEqual(try kbuild(["keg", "fsck"], dataDir: dir + "/a").status, 0)
        let get = try kbuild(["keg", "get", "K-" + sum, dir + "/out"], dataDir: dir + "/b")
        XCTAssertEqual(get.status, 0, get.stderr)
        XCTAssertEqual(try sh("/usr/bin/cmp", [dir + "/big", dir + "/out"]).status, 0)
    }

    func testDataDirComesFromTheFlagOrTheEnvironment() throws {
        let dir = try tempDir(self, "datadir")
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir + "/f"))
        let viaEnv = try sh(kbuildBinary, ["keg", "put", dir + "/f"], env: ["KBUILD_DATA_DIR": dir + "/env"])
        XCTAssertEqual(viaEnv.status, 0, viaEnv.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/env/keg/objects"))
        let viaFlag = try kbuild(["keg", "cat", viaEnv.stdout.trimmingCharacters(in: .whitespacesAndNewlines)], dataDir: dir + "/env")
        XCTAssertEqual(viaFlag.stdout, "x")
    }

    func testRefHistoryAndPins() throws {
        let dir = try tempDir(self, "refs")
        let data = dir + "/data"
        try Data("pinned".utf8).write(to: URL(fileURLWithPath: dir + "/p"))
        let kid = try kbuild(["keg", "put", dir + "/p"], dataDir: data).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(try kbuild(["keg", "pin", kid, "keep"], dataDir: data).status, 0)
        let gc = try kbuild(["keg", "gc", "--grace", "0s"], dataDir: data)
        XCTAssertTrue(gc.stdout.contains("deleted 0 objects"), gc.stdout)
        XCTAssertEqual(try kbuild(["keg", "cat", kid], dataDir: data).stdout, "pinned")
        XCTAssertEqual(try kbuild(["keg", "unpin", "keep"], dataDir: data).status, 0)
        // The pin's history is kept under pins/**: unpinning does not free it until history says so.
        let history = try kbuild(["ref", "history", "pins/keep", "--json"], dataDir: data)
        XCTAssertTrue(history.stdout.contains(kid), history.stdout)
    }
}
