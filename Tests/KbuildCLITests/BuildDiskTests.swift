import Foundation
import XCTest

/// Everything a build writes is on a disk of the app's size (`--build-disk`),
/// enforced by the kernel; sparse files are stored and checked out sparse.
final class BuildDiskTests: XCTestCase {
    func buildpackApp(_ name: String, data: String, disk: String, compile: String) throws -> String {
        XCTAssertEqual(try kbuild(["apps:create", name, "--stack", "busybox", "--build-disk", disk], dataDir: data).status, 0)
        let work = try tempDir(self, name + "-src")
        try writeFile(work + "/Procfile", "web: ./serve.sh\n")
        try writeFile(work + "/serve.sh", "#!/bin/sh\nexec busybox httpd -f -p \"0.0.0.0:$PORT\" -h www\n", mode: 0o755)
        try writeFile(work + "/www/index.html", "hello \(name)\n")
        try writeFile(work + "/.buildpacks", "./bp\n")
        try writeFile(work + "/bp/bin/detect", "#!/bin/sh\necho Disk\n", mode: 0o755)
        try writeFile(work + "/bp/bin/compile", "#!/bin/sh\nset -e\n" + compile + "\n", mode: 0o755)
        try git(["init", "-q"], in: work)
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "First"], in: work)
        XCTAssertEqual(try sh(kbuildBinary, ["git:remote", name, "--data-dir", data], cwd: work).status, 0)
        return work
    }

    func mounts(under data: String) throws -> [String] {
        try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8).split(separator: "\n").filter { $0.contains(data) }.map(String.init)
    }

    func testABuildWritesOnlyWhatItsDiskHolds() throws {
        let data = try makeData("disk")
        _ = try startKbuildUp(self, data: data)
        // Past the disk, in /app or /cache: the kernel says no, the push is rejected.
        for (name, target) in [("fillapp", "/app/big"), ("fillcache", "/cache/big")] {
            let work = try buildpackApp(name, data: data, disk: "64M", compile: "dd if=/dev/zero of=\(target) bs=1M count=100")
            let push = try git(["push", "kbuild", "main"], in: work)
            XCTAssertNotEqual(push.status, 0)
            XCTAssertTrue(push.stderr.contains("No space left on device"), push.stderr)
            XCTAssertNotEqual(try kbuild(["ref", "get", "apps/\(name)/release"], dataDir: data).status, 0, "nothing deployed")
        }
        // A sparse file of 4 GiB on a 64 MiB disk: the disk takes it, the app layer does not.
        let sparse = try buildpackApp("sparsebig", data: data, disk: "64M", compile: "truncate -s 4G /app/sparse")
        let refused = try git(["push", "kbuild", "main"], in: sparse)
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("over the build disk of 64 MiB"), refused.stderr)
        // A sparse file under the limit deploys and stays sparse in the shared file cache;
        // a cache over half the disk is not kept.
        let fine = try buildpackApp("sparseok", data: data, disk: "256M",
                                    compile: "truncate -s 200M /app/sparse && echo data > /app/small && dd if=/dev/urandom of=/cache/big bs=1M count=140 2>/dev/null")
        let push = try git(["push", "kbuild", "main"], in: fine)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stderr.contains("The build cache is over 128 MiB"), push.stderr)
        XCTAssertNotEqual(try kbuild(["ref", "get", "apps/sparseok/build-cache"], dataDir: data).status, 0, "the oversized cache was dropped")
        try waitUntil("running") { healthy(try ps("sparseok", data), count: 1) }
        let big = try sh("/usr/bin/find", [data + "/keg/files", "-type", "f", "-size", "+100M", "-printf", "%s %b\n"]).stdout
        let rows = big.split(separator: "\n").map { $0.split(separator: " ").compactMap { Int($0) } }
        XCTAssertEqual(rows.count, 1, big)
        if let row = rows.first, row.count == 2 {
            XCTAssertEqual(row[0], 200 << 20)
            XCTAssertLessThan(row[1] * 512, 1 << 20, "200 MiB of holes take (nearly) no disk: \(row[1]) blocks")
        }
        // No build disk is left mounted, and none is left behind.
        XCTAssertEqual(try mounts(under: data), [])
        let left = (try? FileManager.default.contentsOfDirectory(atPath: data + "/builds/work")) ?? []
        XCTAssertEqual(left, [])
    }

    /// A worker killed mid-build leaves its disk mounted; the next worker removes it.
    func testADiskLeftByAKilledBuildIsSwept() throws {
        let data = try makeData("disksweep")
        let up = try startKbuildUp(self, data: data)
        let work = try buildpackApp("slowdisk", data: data, disk: "64M", compile: "echo started; sleep 25")
        let log = try tempDir(self, "disksweep-log") + "/push.log"
        let push = try spawnGroup("/usr/bin/git", ["-C", work, "push", "kbuild", "main"], output: log)
        addTeardownBlock { kill(-push, SIGKILL); _ = reap(push) }
        try waitUntil("building", timeout: 60) { !(try self.mounts(under: data)).isEmpty && ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("started") }
        let killed = up.process.processIdentifier
        kill(killed, SIGKILL)
        up.process.waitUntilExit()
        kill(-push, SIGKILL)
        // The killed worker's disk: its name carries the worker's pid.
        let mine = { ((try? FileManager.default.contentsOfDirectory(atPath: data + "/builds/work")) ?? []).filter { $0.contains("-\(killed)-") } }
        XCTAssertFalse(mine().isEmpty, "the killed build's disk is still there")
        XCTAssertTrue(try mounts(under: data).contains { $0.contains("-\(killed)-") }, "and mounted")
        _ = try startKbuildUp(self, data: data)
        try waitUntil("swept", timeout: 30) { mine().isEmpty }
        XCTAssertFalse(try mounts(under: data).contains { $0.contains("-\(killed)-") })
    }
}
