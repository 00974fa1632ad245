import Foundation
import XCTest
import KbuildCore
@testable import Sandbox

/// The escape suite: each test tries one way out of the sandbox, checks from
/// the host that it did not work, and that nothing was left behind. Where a
/// control run shows the same probe succeeding without the barrier, the test
/// shows it can fail.
final class EscapeTests: HostCheckedTestCase {
    // 1
    func testHostFilesOutsideTheMountsCannotBeReadOrWritten() async throws {
        let secret = "/tmp/kbuild-escape-\(getpid())"
        try "top secret\n".write(toFile: secret, atomically: true, encoding: .utf8)
        defer { unlink(secret) }
        let out = try await sh("""
            cat \(secret); cat /proc/1/root\(secret); cat /proc/self/root/../..\(secret); cat /../../..\(secret)
            ls /work /root/.kbuild /sys/fs/cgroup
            echo pwned > \(secret); echo pwned > /proc/1/root\(secret)
            echo done
            """)
        XCTAssertTrue(out.stdout.hasSuffix("done\n"), out.stdout)
        XCTAssertFalse(out.stdout.contains("top secret"), out.stdout)
        XCTAssertEqual(try String(contentsOfFile: secret, encoding: .utf8), "top secret\n")
    }

    // 2
    func testHostProcessesAreNotVisible() async throws {
        let out = try await sh("ls /proc | grep -c '^[0-9]'; cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
        let count = Int(out.stdout.split(separator: "\n").first ?? "") ?? 999
        XCTAssertLessThanOrEqual(count, 5, "only the sandbox's own processes: \(out.stdout)")
        XCTAssertFalse(out.stdout.contains("xctest"), out.stdout)
        XCTAssertFalse(out.stdout.contains("kbuildPackageTests"), out.stdout)
    }

    // 3
    func testHostLoopbackServiceIsUnreachableWithoutNetwork() async throws {
        let (fd, port) = try listenOnLoopback()
        defer { close(fd) }
        let probe = "nc -w 2 127.0.0.1 \(port) -e /bin/true && echo CONNECTED || echo REFUSED"
        let none = try await sh(probe)
        XCTAssertTrue(none.stdout.hasSuffix("REFUSED\n"), none.stdout + none.stderr)
        let host = try await sh(probe) { $0.network = .host }
        XCTAssertTrue(host.stdout.hasSuffix("CONNECTED\n"), "control: with the host's network the probe connects: \(host.stdout + host.stderr)")
    }

    // 4
    func testMountUmountAndRemountAreRefusedAndLowerDirsStayIntact() async throws {
        let busybox = sha256(Fixture.busybox + "/bin/busybox")
        let out = try await sh("""
            mount -t tmpfs none /mnt; echo mount=$?
            mount --bind / /mnt; echo bind=$?
            umount /proc; echo umount=$?
            umount -l /dev; echo umount-dev=$?
            mount -o remount,rw /proc/sys; echo remount=$?
            echo tampered >> /bin/busybox; echo append=$?
            """)
        let codes = parseCodes(out.stdout)
        for key in ["mount", "bind", "umount", "umount-dev", "remount"] {
            XCTAssertNotEqual(codes[key], 0, "\(key) must fail: \(out.stdout)")
            XCTAssertNotNil(codes[key], out.stdout)
        }
        // Writing a lower file copies it up into the sandbox's own upper layer.
        XCTAssertEqual(sha256(Fixture.busybox + "/bin/busybox"), busybox)
    }

    // 5
    func testProcSysSysrqAndSysAreNotWritable() async throws {
        let hostname = try String(contentsOfFile: "/proc/sys/kernel/hostname", encoding: .utf8)
        let overcommit = try String(contentsOfFile: "/proc/sys/vm/overcommit_memory", encoding: .utf8)
        let out = try await sh("""
            echo 2 > /proc/sys/vm/overcommit_memory; echo vm=$?
            echo evil > /proc/sys/kernel/hostname; echo kernel=$?
            echo b > /proc/sysrq-trigger; echo sysrq=$?
            echo 1 > /sys/kernel/mm/ksm/run; echo sys=$?
            echo done
            """)
        let codes = parseCodes(out.stdout)
        XCTAssertEqual(codes.count, 4, out.stdout)
        for (key, code) in codes { XCTAssertNotEqual(code, 0, "\(key) must fail: \(out.stdout)") }
        XCTAssertEqual(try String(contentsOfFile: "/proc/sys/kernel/hostname", encoding: .utf8), hostname)
        XCTAssertEqual(try String(contentsOfFile: "/proc/sys/vm/overcommit_memory", encoding: .utf8), overcommit)
    }

    // 6
    func testTheHelperCannotBeOverwrittenThroughProcExe() async throws {
        // PID 1 is a copy of the helper: /proc/1/exe is the host's kbuild-sandbox (runc's CVE-2019-5736).
        let helper = Fixture.sandbox.helper
        let hash = sha256(helper)
        let out = try await sh("""
            cat /proc/1/exe > /dev/null; echo read=$?
            echo x > /proc/1/exe; echo write=$?
            (exec 3>>/proc/1/exe); echo open=$?
            ls -l /proc/1/fd; echo fds=$?
            echo x > /proc/self/exe; echo self=$?
            echo done
            """)
        let codes = parseCodes(out.stdout)
        for key in ["read", "write", "open", "fds"] { XCTAssertNotEqual(codes[key], 0, "\(key) must fail: \(out.stdout)") }
        XCTAssertEqual(sha256(helper), hash)
        XCTAssertEqual(sha256(Fixture.busybox + "/bin/busybox"), sha256("/bin/busybox"))
    }

    // 7
    func testLeakedHostDescriptorsAreClosed() async throws {
        // A host descriptor without O_CLOEXEC, as a careless caller would leak it (runc's CVE-2024-21626).
        let leaked = open("/etc", O_RDONLY | O_DIRECTORY)
        XCTAssertGreaterThan(leaked, 2)
        defer { close(leaked) }
        let out = try await sh("ls /proc/self/fd | tr '\\n' ' '; cat /proc/self/fd/\(leaked)/hostname; ls /proc/self/fd/\(leaked)/ ; echo done")
        XCTAssertEqual(out.stdout, "0 1 2 3 done\n", "only stdio (and ls's own directory)")
    }

    // 8
    func testASymlinkInABindMountTargetIsRefused() async throws {
        let hostDir = Fixture.scratch("host-target")
        let source = Fixture.scratch("source")
        try "bind source\n".write(toFile: source + "/file", atomically: true, encoding: .utf8)
        let layer = Fixture.scratch("evil-layer")
        try FileManager.default.createSymbolicLink(atPath: layer + "/data", withDestinationPath: hostDir)
        try FileManager.default.createDirectory(atPath: layer + "/deep", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: layer + "/deep/link", withDestinationPath: "/etc")
        for target in ["/data", "/data/sub", "/deep/link", "/deep/link/x"] {
            let error = await expectError {
                _ = try await sh("ls \(target)") { spec in
                    spec.lowerDirs = [layer, Fixture.busybox]
                    spec.mounts = [SandboxMount(source: source, target: target, readOnly: false)]
                }
            }
            XCTAssertTrue(error?.message.contains("symlink") ?? false, "\(target): \(error?.message ?? "")")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: hostDir), [])
        let dotdot = await expectError { _ = try await sh("true") { $0.mounts = [SandboxMount(source: source, target: "/app/../../etc", readOnly: true)] } }
        XCTAssertEqual(dotdot?.code, .invalidArgument)
    }

    // 9
    func testTheHostnameCannotBeChanged() async throws {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count)
        let out = try await sh("hostname evil; echo set=$?; hostname")
        XCTAssertNotEqual(parseCodes(out.stdout)["set"], 0, out.stdout)
        XCTAssertTrue(out.stdout.hasSuffix("kbuild\n"), out.stdout)
        var after = [CChar](repeating: 0, count: 256)
        gethostname(&after, after.count)
        XCTAssertEqual(after, name)
    }

    // 10
    func testAForkBombHitsThePidsLimit() async throws {
        // Builtins only once the limit is reached: a shell that cannot fork gives up.
        let out = try await sh("""
            (i=0; while [ $i -lt 300 ]; do sleep 60 & i=$((i+1)); done) 2>/dev/null
            set -- /proc/[0-9]*; echo $#
            (b() { b | b & }; b) 2>/dev/null
            set -- /proc/[0-9]*; echo $#
            """) { spec in
            spec.limits.pids = 64
            spec.limits.timeout = .seconds(30)
        }
        let counts = out.stdout.split(separator: "\n").compactMap { Int($0) }
        XCTAssertEqual(counts.count, 2, out.stdout + out.stderr)
        for count in counts {
            XCTAssertLessThanOrEqual(count, 64, "the pids limit holds: \(out.stdout)")
            XCTAssertGreaterThan(count, 30, out.stdout)
        }
        XCTAssertLessThan(out.elapsed, .seconds(20))
        // The host is fine: it can still start processes.
        XCTAssertEqual(try shell("true"), 0)
    }

    // 11
    func testAMemoryBombIsKilledAndReportedAsOOM() async throws {
        let out = try await sh("awk 'BEGIN { s = \"x\"; while (1) s = s s }'") { $0.limits.memory = 48 << 20 }
        XCTAssertEqual(out.result.termination, .outOfMemory, out.stderr)
        XCTAssertEqual(out.result.exitStatus, 137)
        XCTAssertLessThanOrEqual(out.result.peakMemory ?? .max, 48 << 20)
    }

    // 12
    func testACPUSpinPastTheTimeoutIsKilledWithItsTree() async throws {
        let out = try await sh("sleep 300 & sh -c 'while :; do :; done' & while :; do :; done") { $0.limits.timeout = .seconds(1) }
        XCTAssertEqual(out.result.termination, .timedOut)
        XCTAssertLessThan(out.elapsed, .seconds(5))
        // tearDown checks that no process of the tree is left.
    }

    // 13
    func testFillingTmpOrTheRootIsBounded() async throws {
        let out = try await sh("""
            dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1 | grep -o 'No space left on device'
            dd if=/dev/zero of=/dev/shm/fill bs=1M count=64 2>&1 | grep -o 'No space left on device'
            dd if=/dev/zero of=/fill bs=1M count=64 2>&1 | grep -o 'No space left on device'
            echo done
            """) { spec in
            spec.limits.tmpSize = 4 << 20
            spec.limits.upperSize = 8 << 20
        }
        XCTAssertEqual(out.stdout.components(separatedBy: "No space left on device").count - 1, 3, out.stdout)
        XCTAssertTrue(out.stdout.hasSuffix("done\n"), out.stdout)
    }

    // 14
    func testNestedUserNamespacesAreRefused() async throws {
        let out = try await sh("unshare -U true; echo userns=$?; unshare -m true; echo mountns=$?")
        let codes = parseCodes(out.stdout)
        XCTAssertNotEqual(codes["userns"], 0, out.stdout + out.stderr)
        XCTAssertNotEqual(codes["mountns"], 0, out.stdout + out.stderr)
    }

    // 15
    func testASetuidFileWrittenThroughAMountIsNotRootsOnTheHost() async throws {
        // A directory other users can reach (under /tmp, not the 0700 data dir).
        let shared = "/tmp/kbuild-escape-shared-\(getpid())"
        try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
        chmod(shared, 0o755)
        defer { try? FileManager.default.removeItem(atPath: shared) }
        // Asked for explicitly, a read-write idmapped mount there is refused.
        let refused = await expectError {
            _ = try await sh("true") { $0.mounts = [SandboxMount(source: shared, target: "/app", readOnly: false, idmap: true)] }
        }
        XCTAssertTrue(refused?.message.contains("refusing a read-write idmapped mount of \(shared)") ?? false, refused?.message ?? "")
        // By default it is mounted without idmap: the sandbox's root plants a setuid shell, which on the host is not root's.
        chown(shared, IDRange.default.base, IDRange.default.base)
        let out = try await sh("cp /bin/busybox /app/sh && chmod 4755 /app/sh && ls -ln /app/sh | awk '{print $1, $3}'") {
            $0.mounts = [SandboxMount(source: shared, target: "/app", readOnly: false)]
        }
        XCTAssertEqual(out.result.termination, .exited(0), out.stderr)
        var st = stat()
        XCTAssertEqual(stat(shared + "/sh", &st), 0)
        XCTAssertEqual(st.st_uid, IDRange.default.base, "owned by the sandbox's unprivileged id, not root")
        XCTAssertNotEqual(st.st_uid, 0)
    }

    /// `key=code` lines.
    func parseCodes(_ text: String) -> [String: Int] {
        var out: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=")
            if parts.count == 2, let code = Int(parts[1]) { out[String(parts[0])] = code }
        }
        return out
    }

    /// A TCP listener on 127.0.0.1 (connections complete in its backlog, unaccepted).
    func listenOnLoopback() throws -> (Int32, UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw KbuildError.syscall("bind", "127.0.0.1", verb: "listen") }
        return (fd, UInt16(bigEndian: addr.sin_port))
    }
}
