import Foundation
import XCTest

/// Per-app limits set by the admin (`apps:limits`): Keg bytes, memory and
/// CPUs across the formation and one-off runs, builds at once.
/// The CPU quota of a host process's cgroup: `cpu.cfs_quota_us` (v1) or the first field of `cpu.max` (v2).
func cpuQuota(of pid: Int32) -> String? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") {
        let parts = line.split(separator: ":", maxSplits: 2).map(String.init)
        guard parts.count == 3 else { continue }
        if parts[1].split(separator: ",").contains("cpu") {
            return (try? String(contentsOfFile: "/sys/fs/cgroup/\(parts[1])\(parts[2])/cpu.cfs_quota_us", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if parts[0] == "0", parts[1].isEmpty, let max = try? String(contentsOfFile: "/sys/fs/cgroup\(parts[2])/cpu.max", encoding: .utf8),
           let quota = max.split(separator: " ").first, quota != "max" {
            return String(quota)
        }
    }
    return nil
}

final class AppLimitsTests: XCTestCase {
    func testLimitsRefuseWhatWouldGoOverThem() throws {
        let data = try makeData("limits")
        let server = try startKbuildUp(self, data: data, extra: ["--node-memory", "8G", "--node-cpus", "8"])
        let work = try makeApp("capped", data: data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        let image = trimmed(try kbuild(["ref", "get", "apps/capped/image"], dataDir: data).stdout)

        // Bad limits are refused, naming what was wrong.
        for (args, message) in [(["--memory", "1k"], "at least 16M"), (["--cpus=-1"], "invalid CPU limit"), (["--builds", "0"], "1 to 100"),
                                (["--cpus", "lots"], "--cpus must be a number"), (["--keg", "ten"], "--keg")] {
            let r = try kbuild(["apps:limits", "capped"] + args, dataDir: data)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        // A formation whose sizes would overflow is refused, and the server stays up.
        let absurd = try kbuild(["ps:scale", "capped", "web=2:16000000T"], dataDir: data)
        XCTAssertNotEqual(absurd.status, 0)
        XCTAssertTrue(absurd.stderr.contains("memory must be from 16M to 1T"), absurd.stderr)
        XCTAssertEqual(try sh("/usr/bin/curl", ["-sf", server.url + "/healthz"]).status, 0)
        let set = try kbuild(["apps:limits", "capped", "--memory", "1G", "--cpus", "1", "--builds", "1", "--keg", "2M"], dataDir: data)
        XCTAssertEqual(set.status, 0, set.stderr)
        let shown = try kbuild(["apps:limits", "capped", "--json"], dataDir: data)
        let limits = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(shown.stdout.utf8)) as? [String: Any], shown.stdout)
        XCTAssertEqual(limits["memory"] as? Int, 1 << 30)
        XCTAssertEqual((limits["used"] as? [String: Any])?["memory"] as? Int, 512 << 20, "web=1 at 512M")
        XCTAssertEqual(limits["builds"] as? Int, 1)

        // Memory and CPUs across the formation: web=2 fits (2 × 512M, 2 × 0.5), web=3 does not.
        let over = try kbuild(["ps:scale", "capped", "web=3"], dataDir: data)
        XCTAssertNotEqual(over.status, 0)
        XCTAssertTrue(over.stderr.contains("needs 1536 MiB of memory in all; capped may use 1024 MiB"), over.stderr)
        XCTAssertEqual(try kbuild(["ps:scale", "capped", "web=2"], dataDir: data).status, 0)
        // A one-off run beside a formation at its limit: refused.
        let run = try sh(kbuildBinary, ["run", "capped", "--", "true"], env: ["KBUILD_DATA_DIR": data])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("a one-off run needs"), run.stderr)
        XCTAssertEqual(try kbuild(["ps:scale", "capped", "web=1"], dataDir: data).status, 0)
        XCTAssertEqual(try sh(kbuildBinary, ["run", "capped", "--", "true"], env: ["KBUILD_DATA_DIR": data]).status, 0)

        // Keg bytes: a push that would take the app past 2M is refused, and nothing deploys.
        try Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7919 &+ $0 >> 11) }).write(to: URL(fileURLWithPath: work + "/www/big.bin"))
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "big"], in: work)
        let big = try git(["push", "kbuild", "main"], in: work)
        XCTAssertNotEqual(big.status, 0)
        XCTAssertTrue(big.stderr.contains("would hold") && big.stderr.contains("it may hold 2 MiB"), big.stderr)
        XCTAssertEqual(trimmed(try kbuild(["ref", "get", "apps/capped/image"], dataDir: data).stdout), image, "the image did not move")
        try waitUntil("what ran runs") { healthy(try ps("capped", data), count: 1) }
        // A healthy process is held to its CPU limit (it booted without it, for at most 10 s).
        let pid = try XCTUnwrap(try ps("capped", data).first?.hostPID)
        try waitUntil("the CPU limit of web.1 is on") { cpuQuota(of: pid) == "50000" }

        // An app token may read its limits, not set them.
        let made = try kbuild(["tokens:create", "capped-dev", "--app", "capped"], dataDir: data)
        XCTAssertEqual(made.status, 0, made.stderr)
        let env = ["KBUILD_URL": server.url, "KBUILD_TOKEN": trimmed(made.stdout)]
        let read = try sh(kbuildBinary, ["apps:limits", "capped"], env: env)
        XCTAssertEqual(read.status, 0, "\(made.stdout) \(read.stderr)")
        let raise = try sh(kbuildBinary, ["apps:limits", "capped", "--memory", "64G"], env: env)
        XCTAssertNotEqual(raise.status, 0)
        XCTAssertTrue(raise.stderr.contains("this token may not do that"), raise.stderr)
        // `none` lifts a limit.
        XCTAssertEqual(try kbuild(["apps:limits", "capped", "--keg", "none"], dataDir: data).status, 0)
        let lifted = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(lifted.status, 0, lifted.stderr)
    }

    /// Builds at once: a build still running for a push that was abandoned
    /// counts, so a tenant cannot queue build after build by hanging up.
    func testBuildsAtOnce() throws {
        let data = try makeData("buildlimit")
        _ = try startKbuildUp(self, data: data)
        let work = try makeApp("queued", data: data, files: [
            ".buildpacks": "./bp\n", "bp/bin/detect": "#!/bin/sh\necho Slow\n", "bp/bin/compile": "#!/bin/sh\nsleep 120\n",
        ])
        for file in ["bp/bin/detect", "bp/bin/compile"] { chmod(work + "/" + file, 0o755) }
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "slow"], in: work)
        XCTAssertEqual(try kbuild(["apps:limits", "queued", "--builds", "1"], dataDir: data).status, 0)
        let log = try tempDir(self, "queued-log") + "/push.log"
        let first = try spawnGroup("/usr/bin/git", ["-C", work, "push", "kbuild", "main"], output: log)
        addTeardownBlock { kill(-first, SIGKILL); _ = reap(first) }
        // ("queued" is also the app's name: wait for the build line itself.)
        try waitUntil("the build queued", timeout: 60) {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            return text.range(of: #"Build K-[0-9a-f]+ queued"#, options: .regularExpression) != nil
        }
        kill(-first, SIGKILL)
        _ = reap(first)
        // Another commit: its build would be a second at once.
        try writeFile(work + "/www/index.html", "again\n")
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "again"], in: work)
        var second = Result(status: 0, stdout: "", stderr: "")
        // (The abandoned push's hook holds the deploy lock until the server notices the hang-up, within seconds.)
        try waitUntil("refused for the build limit, not the deploy lock", timeout: 60) {
            second = try git(["push", "kbuild", "main"], in: work)
            return !second.stderr.contains("another push to queued")
        }
        XCTAssertNotEqual(second.status, 0)
        XCTAssertTrue(second.stderr.contains("queued has 1 build queued or running, its limit"), second.stderr)
    }

    /// One-off runs count against the nodes' capacity too.
    func testAOneOffRunNeedsRoom() throws {
        let data = try makeData("oneoffroom")
        _ = try startKbuildUp(self, data: data, extra: ["--node-memory", "600M", "--node-cpus", "2"])
        let work = try makeApp("full", data: data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        let run = try sh(kbuildBinary, ["run", "full", "--", "true"], env: ["KBUILD_DATA_DIR": data])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("no room for a one-off run of 512 MiB"), run.stderr)
        XCTAssertEqual(try kbuild(["ps:scale", "full", "web=0"], dataDir: data).status, 0)
        XCTAssertEqual(try sh(kbuildBinary, ["run", "full", "--", "true"], env: ["KBUILD_DATA_DIR": data]).status, 0)
    }
}
