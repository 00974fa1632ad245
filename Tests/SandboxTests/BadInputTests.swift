import Foundation
import XCTest
import KbuildCore
import KbuildState
import SQLiteState
import Keg
@testable import Sandbox
@testable import Stacks

/// Bad input: a clear error naming what was wrong, and nothing left behind.
final class BadInputTests: HostCheckedTestCase {
    func testAStackThatDoesNotExist() async throws {
        let data = Fixture.scratch("stackless")
        let dir = DataDir(root: URL(fileURLWithPath: data))
        try dir.create()
        let stacks = StackStore(keg: try Keg(dataDir: dir), refs: try SQLiteRefStore(path: dir.refStore.path))
        let error = await expectError { _ = try await stacks.get("nope") }
        XCTAssertEqual(error?.code, .notFound)
        XCTAssertTrue(error?.message.contains("no stack named \"nope\"") ?? false, error?.message ?? "")
        let badName = await expectError { _ = try await stacks.get("../etc") }
        XCTAssertEqual(badName?.code, .invalidArgument)
        let missingDir = await expectError { _ = try await stacks.importDirectory(data + "/missing", name: "x", actor: "test") }
        XCTAssertEqual(missingDir?.code, .notFound)
        XCTAssertTrue(missingDir?.message.contains(data + "/missing") ?? false, missingDir?.message ?? "")
    }

    func testALowerDirThatDoesNotExist() async throws {
        let error = await expectError { _ = try await sh("true") { $0.lowerDirs = ["/nonexistent/stack"] } }
        XCTAssertEqual(error?.code, .notFound)
        XCTAssertTrue(error?.message.contains("lower dir /nonexistent/stack does not exist") ?? false, error?.message ?? "")
        let file = await expectError { _ = try await sh("true") { $0.lowerDirs = [Fixture.busybox + "/etc/passwd"] } }
        XCTAssertTrue(file?.message.contains("is not a directory") ?? false, file?.message ?? "")
        let source = await expectError { _ = try await sh("true") { $0.mounts = [SandboxMount(source: "/nonexistent/src", target: "/app", readOnly: true)] } }
        XCTAssertTrue(source?.message.contains("mount source /nonexistent/src does not exist") ?? false, source?.message ?? "")
    }

    func testACommandThatDoesNotExistInTheStack() async throws {
        let error = await expectError { _ = try await Fixture.sandbox.run(SandboxSpec(command: ["no-such-command"], lowerDirs: [Fixture.busybox])) }
        XCTAssertEqual(error?.code, .notFound)
        XCTAssertTrue(error?.message.contains("command not found in the sandbox's PATH: no-such-command") ?? false, error?.message ?? "")
        let path = await expectError { _ = try await Fixture.sandbox.run(SandboxSpec(command: ["/usr/bin/python3"], lowerDirs: [Fixture.busybox])) }
        XCTAssertTrue(path?.message.contains("exec /usr/bin/python3") ?? false, path?.message ?? "")
        XCTAssertTrue(path?.message.contains("No such file or directory") ?? false, path?.message ?? "")
        let cwd = await expectError { _ = try await sh("true") { $0.workingDirectory = "/no/such/dir" } }
        XCTAssertTrue(cwd?.message.contains("chdir to /no/such/dir") ?? false, cwd?.message ?? "")
    }

    func testAnUpperDirOnAFilesystemOverlayfsRefuses() async throws {
        // An overlay cannot be another overlay's upper layer.
        let dir = Fixture.scratch("nested")
        for sub in ["l", "u", "w", "m"] { try FileManager.default.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true) }
        try shell("mount -t overlay overlay -o lowerdir=\(dir)/l,upperdir=\(dir)/u,workdir=\(dir)/w \(dir)/m")
        defer { _ = try? shell("umount \(dir)/m") }
        let before = HostState.now()
        let error = await expectError { _ = try await sh("true") { $0.upperDir = dir + "/m/upper" } }
        XCTAssertTrue(error?.message.contains("overlay refused the upper dir \(dir)/m/upper") ?? false, error?.message ?? "")
        assertNothingLeft(since: before)
    }

    func testLimitsThatMakeNoSense() async throws {
        let rows: [(String, (inout SandboxLimits) -> Void)] = [
            ("memory 0 bytes is below the minimum of 4 MiB", { $0.memory = 0 }),
            ("timeout -5.0 seconds must be positive", { $0.timeout = .seconds(-5) }),
            ("timeout 0.0 seconds must be positive", { $0.timeout = .zero }),
            ("pids 0 must be between", { $0.pids = 0 }),
            ("cpus 0.0 must be between", { $0.cpus = 0 }),
            ("cpus nan must be between", { $0.cpus = .nan }),
            ("tmp size 0 bytes is below 4 KiB", { $0.tmpSize = 0 }),
            ("upper size 1 bytes is below 1 MiB", { $0.upperSize = 1 }),
        ]
        for (want, change) in rows {
            let error = await expectError { _ = try await sh("true") { change(&$0.limits) } }
            XCTAssertEqual(error?.code, .invalidArgument)
            XCTAssertTrue(error?.message.contains(want) ?? false, "\(want): \(error?.message ?? "")")
        }
        let specRows: [(String, (inout SandboxSpec) -> Void)] = [
            ("no command given", { $0.command = [] }),
            ("no lower dir", { $0.lowerDirs = [] }),
            ("working directory \"etc\"", { $0.workingDirectory = "etc" }),
            ("hostname", { $0.hostname = "bad host" }),
            ("mount target /proc", { $0.mounts = [SandboxMount(source: "/tmp", target: "/proc/x", readOnly: true)] }),
            ("environment variable \"A=B\"", { $0.environment = ["A=B": "c"] }),
        ]
        for (want, change) in specRows {
            let error = await expectError { _ = try await sh("true", change) }
            XCTAssertEqual(error?.code, .invalidArgument)
            XCTAssertTrue(error?.message.contains(want) ?? false, "\(want): \(error?.message ?? "")")
        }
    }

    func testACgroupThatCannotBeCreated() async throws {
        // This host's v2 hierarchy has no controllers to give: limits there must fail, clearly.
        let v2 = try Sandbox(cgroups: CgroupLayout(version: .v2, base: "/sys/fs/cgroup/unified", parent: "kbuild-test"))
        let spec = SandboxSpec(command: ["true"], lowerDirs: [Fixture.busybox], limits: SandboxLimits(memory: 64 << 20))
        let error = await expectError { _ = try await v2.run(spec) }
        XCTAssertTrue(error?.message.contains("/sys/fs/cgroup/unified/kbuild-test/cgroup.subtree_control") ?? false, error?.message ?? "")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/unified/kbuild-test").filter { $0.hasPrefix("sb-") }, [])
        rmdir("/sys/fs/cgroup/unified/kbuild-test")

        let missing = try Sandbox(cgroups: CgroupLayout(version: .v1, base: "/nonexistent/cgroup"))
        let e2 = await expectError { _ = try await missing.run(spec) }
        XCTAssertTrue(e2?.message.contains("mkdir(/nonexistent/cgroup/memory/kbuild)") ?? false, e2?.message ?? "")

        let none = try Sandbox(cgroups: nil)
        let e3 = await expectError { _ = try await none.run(spec) }
        XCTAssertTrue(e3?.message.contains("no cgroup hierarchy") ?? false, e3?.message ?? "")
    }

    func testANetworkNamespaceThatDoesNotExist() async throws {
        let error = await expectError { _ = try await sh("true") { $0.network = .namespace("kbuild-no-such-ns") } }
        XCTAssertEqual(error?.code, .notFound)
        XCTAssertTrue(error?.message.contains("/run/netns/kbuild-no-such-ns") ?? false, error?.message ?? "")
    }

    func testAMissingHelperIsNamed() async throws {
        let broken = try Sandbox(helper: "/nonexistent/kbuild-sandbox")
        let error = await expectError { _ = try await broken.run(SandboxSpec(command: ["true"], lowerDirs: [Fixture.busybox])) }
        XCTAssertTrue(error?.message.contains("/nonexistent/kbuild-sandbox") ?? false, error?.message ?? "")
    }
}
