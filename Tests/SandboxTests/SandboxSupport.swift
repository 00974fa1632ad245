import Foundation
import Synchronization
import XCTest
import KbuildCore
@testable import Sandbox
@testable import Stacks

/// Removes the fixture's directory when the test bundle finishes.
final class RemoveFixtureAtEnd: NSObject, XCTestObservation, @unchecked Sendable {
    let path: String
    init(_ path: String) { self.path = path }
    func testBundleDidFinish(_ testBundle: Bundle) { try? FileManager.default.removeItem(atPath: path) }
}

/// One busybox root filesystem (made as the busybox stack is) and one Sandbox for every test.
enum Fixture {
    static let root: String = {
        let dir = NSTemporaryDirectory() + "kbuild-sandbox-tests-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        do {
            // Like kbuild's data dir: only root can enter, so read-write idmapped mounts below it are allowed.
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            chmod(dir, 0o700)
            try StackStore.makeBusyboxRoot(at: dir + "/busybox")
        } catch {
            fatalError("cannot make the busybox root (apt-get install busybox-static): \(error)")
        }
        XCTestObservationCenter.shared.addTestObserver(RemoveFixtureAtEnd(dir))
        return dir
    }()

    static var busybox: String { root + "/busybox" }

    static let sandbox: Sandbox = {
        do { return try Sandbox() } catch { fatalError("cannot create the sandbox: \(error)") }
    }()

    /// A fresh directory for one test.
    static func scratch(_ name: String) -> String {
        let dir = root + "/\(name)-\(UInt32.random(in: 0...UInt32.max))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}

struct Outcome {
    var result: SandboxResult
    var stdout: String
    var stderr: String
    var elapsed: Duration
}

/// Runs a shell script in the busybox sandbox and collects its output.
func sh(_ script: String, _ configure: (inout SandboxSpec) -> Void = { _ in }) async throws -> Outcome {
    var spec = SandboxSpec(command: ["/bin/sh", "-c", script], lowerDirs: [Fixture.busybox])
    spec.limits.timeout = .seconds(60)
    configure(&spec)
    let out = Mutex<([UInt8], [UInt8])>(([], []))
    let start = ContinuousClock.now
    let result = try await Fixture.sandbox.run(spec) { stream, bytes in
        out.withLock { if stream == .stdout { $0.0 += bytes } else { $0.1 += bytes } }
    }
    let (o, e) = out.withLock { $0 }
    return Outcome(result: result, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self),
                   elapsed: ContinuousClock.now - start)
}

/// What a sandbox could leave behind on the host: mounts, cgroups, processes in
/// the sandboxes' id range (a namespace lives only as long as something holds
/// it), descriptors of ours.
struct HostState: Equatable {
    var mounts: Int
    var cgroups: [String]
    var sandboxProcesses: [String]
    /// Our descriptors of the kinds a sandbox start makes: pipes, pidfds, namespaces, mounts of the fixture.
    var fds: [String]

    static func now() -> HostState {
        let mounts = ((try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "").split(separator: "\n").count
        var cgroups: [String] = []
        for hierarchy in ["memory", "pids", "cpu", "unified"] {
            let dir = "/sys/fs/cgroup/\(hierarchy)/kbuild"
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix("sb-\(getpid())-") {
                cgroups.append(dir + "/" + name)
            }
        }
        var procs: [String] = []
        for pid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int(pid) != nil {
            // A zombie holds no namespace (and this machine's PID 1 may never reap orphans).
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                  !status.contains("State:\tZ"),
                  let uid = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }) else { continue }
            if uid.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().contains(where: { $0 == String(IDRange.default.base) }) {
                procs.append(pid + " " + ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""))
            }
        }
        var fds: [String] = []
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd) else { continue }
            if target.hasPrefix("pipe:") || target == "anon_inode:[pidfd]" || target.hasPrefix("user:[") || target.hasPrefix("net:[")
                || target.contains("kbuild-sandbox-tests") {
                fds.append(target)
            }
        }
        fds.sort()
        return HostState(mounts: mounts, cgroups: cgroups, sandboxProcesses: procs, fds: fds)
    }
}

/// Checks that nothing is left behind once the sandbox is done.
func assertNothingLeft(since before: HostState, file: StaticString = #filePath, line: UInt = #line) {
    // The kernel finishes tearing down a dead PID namespace asynchronously: a bounded wait.
    var after = HostState.now()
    for _ in 0..<100 where after != before {
        usleep(20_000)
        after = HostState.now()
    }
    XCTAssertEqual(after.mounts, before.mounts, "mounts left behind", file: file, line: line)
    XCTAssertEqual(after.cgroups, [], "cgroups left behind", file: file, line: line)
    XCTAssertEqual(after.sandboxProcesses, [], "sandbox processes left behind", file: file, line: line)
    XCTAssertEqual(after.fds, before.fds, "descriptors left open", file: file, line: line)
}

func sha256(_ path: String) -> String {
    guard let data = FileManager.default.contents(atPath: path) else { return "missing" }
    return KID(hashing: data).hex
}

/// Runs `body` and returns the KbuildError it throws (fails if it does not throw one).
func expectError(_ body: () async throws -> Void, file: StaticString = #filePath, line: UInt = #line) async -> KbuildError? {
    do {
        try await body()
        XCTFail("expected an error", file: file, line: line)
        return nil
    } catch let error as KbuildError {
        return error
    } catch {
        XCTFail("expected a KbuildError, got \(error)", file: file, line: line)
        return nil
    }
}

/// A test case that checks after every test that nothing was left on the host.
class HostCheckedTestCase: XCTestCase {
    var before = HostState.now()

    override func setUp() async throws {
        _ = Fixture.sandbox
        before = HostState.now()
    }

    override func tearDown() async throws {
        assertNothingLeft(since: before)
    }
}
