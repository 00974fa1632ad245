import Foundation
import Synchronization
import XCTest
import KbuildCore
@testable import Sandbox

/// The library: what a sandboxed command sees and how its end is reported.
final class SandboxTests: XCTestCase {
    func testExitCodeAndSeparateStreams() async throws {
        let before = HostState.now()
        let out = try await sh("echo to-stdout; echo to-stderr >&2; exit 7")
        XCTAssertEqual(out.result.termination, .exited(7))
        XCTAssertEqual(out.result.exitStatus, 7)
        XCTAssertEqual(out.stdout, "to-stdout\n")
        XCTAssertEqual(out.stderr, "to-stderr\n")
        assertNothingLeft(since: before)
    }

    func testRootInsideUnprivilegedOutside() async throws {
        let out = try await sh("id -u; cat /proc/self/uid_map; cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs|Seccomp):'")
        let lines = out.stdout.split(separator: "\n").map { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ") }
        XCTAssertEqual(lines.first, "0")
        XCTAssertEqual(lines.dropFirst().first, "0 \(IDRange.default.base) \(IDRange.default.count)", out.stdout)
        XCTAssertTrue(lines.contains("NoNewPrivs: 1"), out.stdout)
        XCTAssertTrue(lines.contains("Seccomp: 2"), out.stdout)
        // No CAP_SYS_ADMIN (bit 21), even as root inside.
        let capEff = lines.first { $0.hasPrefix("CapEff:") }.flatMap { UInt64($0.dropFirst(8), radix: 16) }
        XCTAssertNotNil(capEff)
        XCTAssertEqual((capEff ?? 1 << 21) & (1 << 21), 0)
    }

    func testSignalIsReported() async throws {
        let out = try await sh("kill -9 $$")
        XCTAssertEqual(out.result.termination, .signaled(9))
        XCTAssertEqual(out.result.exitStatus, 137)
    }

    func testEnvironmentWorkdirUserHostname() async throws {
        let out = try await sh("env | sort; pwd; id -u; id -g; hostname") { spec in
            spec.environment = ["PATH": "/bin:/usr/bin", "GREETING": "hello world"]
            spec.workingDirectory = "/etc"
            spec.user = 1000
            spec.group = 1001
            spec.hostname = "box-1"
        }
        XCTAssertEqual(out.result.termination, .exited(0), out.stderr)
        let lines = out.stdout.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.contains("GREETING=hello world"), out.stdout)
        XCTAssertFalse(lines.contains { $0.hasPrefix("HOME=") }, "nothing is inherited from the caller: \(out.stdout)")
        XCTAssertEqual(Array(lines.suffix(4)), ["/etc", "1000", "1001", "box-1"])
    }

    func testNetworkNoneHasOnlyLoopbackAndHostSeesTheHost() async throws {
        let none = try await sh("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
        XCTAssertEqual(none.stdout, "lo\n")
        let hostInterfaces = try String(contentsOfFile: "/proc/net/dev", encoding: .utf8).split(separator: "\n").count - 2
        let host = try await sh("cat /proc/net/dev | tail -n +3 | wc -l") { $0.network = .host }
        XCTAssertEqual(Int(host.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), hostInterfaces)
    }

    func testNamedNetworkNamespace() async throws {
        let name = "kbtest-\(getpid())"
        try shell("ip netns add \(name) && ip -n \(name) link set lo up")
        defer { _ = try? shell("ip netns del \(name)") }
        var st = stat()
        XCTAssertEqual(stat("/run/netns/" + name, &st), 0)
        let out = try await sh("readlink /proc/self/ns/net") { $0.network = .namespace(name) }
        XCTAssertEqual(out.stdout, "net:[\(st.st_ino)]\n", out.stderr)
    }

    func testBindMountsReadOnlyAndReadWrite() async throws {
        let ro = Fixture.scratch("ro"), rw = Fixture.scratch("rw")
        try "from the host\n".write(toFile: ro + "/file", atomically: true, encoding: .utf8)
        let out = try await sh("cat /ro/file; echo x > /ro/new 2>/dev/null; echo ro=$?; echo written > /rw/out; ls -ln /rw/out | awk '{print $3}'") { spec in
            spec.mounts = [SandboxMount(source: ro, target: "/ro", readOnly: true), SandboxMount(source: rw, target: "/rw/", readOnly: false)]
        }
        XCTAssertEqual(out.result.termination, .exited(0), out.stderr)
        XCTAssertEqual(out.stdout, "from the host\nro=1\n0\n")
        XCTAssertEqual(try String(contentsOfFile: rw + "/out", encoding: .utf8), "written\n")
        var st = stat()
        XCTAssertEqual(stat(rw + "/out", &st), 0)
        XCTAssertEqual(st.st_uid, 0, "idmapped: root inside is root on disk")
        XCTAssertFalse(FileManager.default.fileExists(atPath: ro + "/new"))
    }

    func testKeptUpperHoldsTheChanges() async throws {
        let upper = Fixture.scratch("upper") + "/layer"
        let out = try await sh("echo changed > /etc/motd; rm /bin/ls; echo ok") { $0.upperDir = upper }
        XCTAssertEqual(out.stdout, "ok\n", out.stderr)
        XCTAssertEqual(try String(contentsOfFile: upper + "/upper/etc/motd", encoding: .utf8), "changed\n")
        var st = stat()
        XCTAssertEqual(stat(upper + "/upper/etc/motd", &st), 0)
        XCTAssertEqual(st.st_uid, IDRange.default.base, "the upper layer is the sandbox's unprivileged id's on disk")
        XCTAssertTrue(FileManager.default.fileExists(atPath: Fixture.busybox + "/bin/ls"), "the lower dir is untouched")
        // The next run over the same upper sees the change.
        let again = try await sh("cat /etc/motd; ls /bin/ls 2>&1 || true") { $0.upperDir = upper }
        XCTAssertTrue(again.stdout.hasPrefix("changed\n"), again.stdout)
    }

    func testLowerDirsStackTopmostFirst() async throws {
        let top = Fixture.scratch("top")
        try FileManager.default.createDirectory(atPath: top + "/etc", withIntermediateDirectories: true)
        try "top layer\n".write(toFile: top + "/etc/os-release", atomically: true, encoding: .utf8)
        let out = try await sh("cat /etc/os-release") { $0.lowerDirs = [top, Fixture.busybox] }
        XCTAssertEqual(out.stdout, "top layer\n")
    }

    func testStdinFromTheCaller() async throws {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        _ = "line one\nline two\n".withCString { write(fds[1], $0, strlen($0)) }
        close(fds[1])
        defer { close(fds[0]) }
        let out = try await sh("wc -l") { $0.stdin = .fd(fds[0]) }
        XCTAssertEqual(out.stdout.trimmingCharacters(in: .whitespaces), "2\n")
    }

    func testOutputIsStreamedAsItIsWritten() async throws {
        let firstAt = Mutex<ContinuousClock.Instant?>(nil)
        let start = ContinuousClock.now
        var spec = SandboxSpec(command: ["/bin/sh", "-c", "echo first; sleep 1; echo second"], lowerDirs: [Fixture.busybox])
        spec.stderr = .discard
        let result = try await Fixture.sandbox.run(spec) { _, _ in
            firstAt.withLock { if $0 == nil { $0 = .now } }
        }
        let end = ContinuousClock.now
        XCTAssertEqual(result.termination, .exited(0))
        let first = try XCTUnwrap(firstAt.withLock { $0 })
        XCTAssertLessThan(first - start, end - start - .milliseconds(700), "the first line arrived before the command ended")
    }

    func testCancelKillsTheSandbox() async throws {
        let before = HostState.now()
        let task = Task { try await sh("sleep 100 & sleep 100") }
        try await Task.sleep(for: .milliseconds(500))
        task.cancel()
        let out = try await task.value
        XCTAssertEqual(out.result.termination, .cancelled)
        XCTAssertLessThan(out.elapsed, .seconds(5))
        assertNothingLeft(since: before)
    }

    func testWarmHelpersRunSandboxAfterSandbox() async throws {
        let before = HostState.now()
        do {
            let sandbox = try Sandbox(warmHelpers: 2)
            try await Task.sleep(for: .milliseconds(300))  // let the pool fill
            func run(_ script: String, network: SandboxNetwork = .none, limits: SandboxLimits = SandboxLimits()) async throws -> (SandboxResult, String) {
                let out = Mutex<[UInt8]>([])
                var spec = SandboxSpec(command: ["/bin/sh", "-c", script], lowerDirs: [Fixture.busybox], network: network, limits: limits)
                spec.stderr = .discard
                let result = try await sandbox.run(spec) { _, bytes in out.withLock { $0 += bytes } }
                return (result, String(decoding: out.withLock { $0 }, as: UTF8.self))
            }
            // Limits hold in a reused cgroup, and are lifted for the next sandbox in it.
            for round in 0..<3 {
                let (oom, _) = try await run("awk 'BEGIN { s = \"x\"; while (1) s = s s }'", limits: SandboxLimits(memory: 32 << 20))
                XCTAssertEqual(oom.termination, .outOfMemory, "round \(round)")
                let (big, text) = try await run("head -c 100000000 /dev/zero | tr '\\0' x | wc -c")
                XCTAssertEqual(big.termination, .exited(0), "round \(round)")
                XCTAssertEqual(text.trimmingCharacters(in: .whitespacesAndNewlines), "100000000")
                let (host, lines) = try await run("cat /proc/net/dev | wc -l", network: .host)
                XCTAssertEqual(host.termination, .exited(0))
                XCTAssertGreaterThan(Int(lines.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, 3, "the host's interfaces")
                let (none, only) = try await run("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
                XCTAssertEqual(none.termination, .exited(0))
                XCTAssertEqual(only, "lo\n", "a fresh loopback-only namespace each time")
            }
            // A warm helper keeps no descriptor of the sandboxes it ran (counted once each has settled).
            try await Task.sleep(for: .milliseconds(100))
            let fdsBefore = Dictionary(uniqueKeysWithValues: childHelpers().map { ($0, fdCount($0)) })
            XCTAssertFalse(fdsBefore.isEmpty)
            for _ in 0..<10 {
                _ = try await run("true")
                _ = try await run("true", network: .host)
            }
            try await Task.sleep(for: .milliseconds(100))  // let the last one settle
            for (pid, count) in fdsBefore where FileManager.default.fileExists(atPath: "/proc/\(pid)") {
                XCTAssertEqual(fdCount(pid), count, "helper \(pid) after 20 sandboxes")
            }
            // More at once than the pool holds: the rest start cold.
            try await withThrowingTaskGroup(of: SandboxResult.Termination.self) { group in
                for i in 0..<5 { group.addTask { try await run("exit \(i)").0.termination } }
                var codes: [SandboxResult.Termination] = []
                for try await t in group { codes.append(t) }
                XCTAssertEqual(Set(codes.map { "\($0)" }), Set((0..<5).map { "\(SandboxResult.Termination.exited(Int32($0)))" }))
            }
            // A timeout kills the warm helper's sandbox; the pool carries on.
            let (slow, _) = try await run("sleep 30", limits: SandboxLimits(timeout: .milliseconds(300)))
            XCTAssertEqual(slow.termination, .timedOut)
            let (after, _) = try await run("true")
            XCTAssertEqual(after.termination, .exited(0))
        }
        // The pool stopped with its Sandbox: helpers and their cgroups are gone.
        assertNothingLeft(since: before)
    }

    func testTheWholeStackPathFromTheKeg() async throws {
        // Stack → OCI image in the Keg → checkout → lower dir → run; gc keeps it all.
        let data = Fixture.scratch("data")
        let out = try shellOutput("""
            export KBUILD_DATA_DIR=\(data)
            \(kbuildBinary) stack create busybox >/dev/null
            \(kbuildBinary) keg gc --grace 0 >/dev/null
            rm -rf \(data)/trees
            \(kbuildBinary) sandbox run --stack busybox -- sh -c 'echo via-stack; cat /etc/os-release | head -1'
            """)
        XCTAssertEqual(out, "via-stack\nNAME=kbuild-busybox\n")
    }

    // Pure decisions.

    func testTerminationDecisions() {
        let exited0: (Int32, Int32) = (1, 0), killed9: (Int32, Int32) = (2, 9), killed15: (Int32, Int32) = (2, 15)
        let rows: [((Int32, Int32)?, Bool, Bool, Bool, SandboxResult.Termination)] = [
            (exited0, false, false, false, .exited(0)),
            (killed15, false, false, false, .signaled(15)),
            (killed9, false, false, true, .outOfMemory),
            (nil, false, false, true, .outOfMemory),
            (exited0, false, false, true, .exited(0)),  // a child was OOM-killed, the command went on
            (nil, false, false, false, .signaled(9)),
            (killed9, true, false, true, .timedOut),
            (nil, false, true, false, .cancelled),
        ]
        for (status, timedOut, cancelled, oom, want) in rows {
            XCTAssertEqual(SandboxResult.Termination.decide(status: status.map { (kind: $0.0, code: $0.1) }, timedOut: timedOut, cancelled: cancelled, oomKilled: oom), want)
        }
    }

    func testCgroupSettings() {
        let limits = SandboxLimits(memory: 64 << 20, pids: 100, cpus: 0.5)
        let v2 = CgroupLayout.settings(limits, version: .v2, hasSwapAccounting: false).map { "\($0.file)=\($0.value)" }
        XCTAssertEqual(v2, ["memory.max=67108864", "memory.swap.max=0", "pids.max=100", "cpu.max=50000 100000"])
        let v1 = CgroupLayout.settings(limits, version: .v1, hasSwapAccounting: true).map { "\($0.controller ?? "")/\($0.file)=\($0.value)" }
        XCTAssertEqual(v1, ["memory/memory.limit_in_bytes=67108864", "memory/memory.memsw.limit_in_bytes=67108864",
                            "pids/pids.max=100", "cpu/cpu.cfs_period_us=100000", "cpu/cpu.cfs_quota_us=50000"])
        // A cgroup used again lifts what this sandbox does not limit.
        let reused = CgroupLayout.settings(SandboxLimits(pids: 7), version: .v1, hasSwapAccounting: true, reset: true).map { "\($0.file)=\($0.value)" }
        XCTAssertEqual(reused, ["memory.memsw.limit_in_bytes=-1", "memory.limit_in_bytes=-1", "pids.max=7", "cpu.cfs_quota_us=-1"])
        let lowered = CgroupLayout.settings(SandboxLimits(memory: 1 << 20), version: .v1, hasSwapAccounting: true, reset: true).map { "\($0.file)=\($0.value)" }
        XCTAssertEqual(lowered.prefix(3), ["memory.memsw.limit_in_bytes=-1", "memory.limit_in_bytes=1048576", "memory.memsw.limit_in_bytes=1048576"])
        XCTAssertEqual(CgroupLayout.settings(SandboxLimits(), version: .v2, hasSwapAccounting: false, reset: true).map { "\($0.file)=\($0.value)" },
                       ["memory.max=max", "memory.swap.max=max", "pids.max=max", "cpu.max=max 100000"])
        XCTAssertEqual(CgroupLayout(version: .v1, base: "/c").directories(for: "x", limits: SandboxLimits(pids: 5)).map(\.path), ["/c/pids/kbuild/x"])
        XCTAssertEqual(CgroupLayout(version: .v1, base: "/c").directories(for: "x", limits: nil).count, 3)
        XCTAssertEqual(CgroupLayout(version: .v2, base: "/c").directories(for: "x", limits: limits).map(\.path), ["/c/kbuild/x"])
    }

    func testCPULimitSlowsASpin() async throws {
        // A second of spinning at 0.1 of a core is about 10 ticks (100 Hz) of CPU, not 100.
        let script = "sh -c 'while :; do :; done' & p=$!; sleep 1; kill $p; wait $p; awk '{print $16 + $17}' /proc/$$/stat"
        let limited = try await sh(script) { $0.limits.cpus = 0.1 }
        let free = try await sh(script)
        let ticks = Int(limited.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        let freeTicks = Int(free.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        XCTAssertGreaterThanOrEqual(ticks, 0, limited.stdout + limited.stderr)
        XCTAssertLessThan(ticks, 40, "limited to 0.1 core: \(ticks) ticks")
        XCTAssertGreaterThan(freeTicks, 50, "unlimited: \(freeTicks) ticks")
    }
}

/// This process's kbuild-sandbox children (the warm helpers), by PID.
func childHelpers() -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { pid in
        guard Int(pid) != nil, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        return stat.contains("(kbuild-sandbox)") && fields.count > 1 && Int32(fields[1]) == getpid()
    }.sorted()
}

func fdCount(_ pid: String) -> Int {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
}

/// Runs a shell command on the host; throws on a non-zero exit.
@discardableResult
func shell(_ command: String) throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", command]
    try p.run()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw KbuildError(.io, "`\(command)` exited with \(p.terminationStatus)") }
    return p.terminationStatus
}

func shellOutput(_ command: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", command]
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw KbuildError(.io, "`\(command)` exited with \(p.terminationStatus)") }
    return String(decoding: data, as: UTF8.self)
}

/// The `kbuild` executable under test: $KBUILD_BIN, else the one built beside this test bundle.
let kbuildBinary: String = {
    if let env = ProcessInfo.processInfo.environment["KBUILD_BIN"], !env.isEmpty { return env }
    let besideTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("kbuild").path
    if FileManager.default.isExecutableFile(atPath: besideTests) { return besideTests }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug/kbuild").path
}()
