import Foundation
import XCTest

/// The `kbuild` executable under test: $KBUILD_BIN, else the one built beside this test bundle.
let kbuildBinary: String = {
    let path: String
    if let env = ProcessInfo.processInfo.environment["KBUILD_BIN"], !env.isEmpty {
        path = env
    } else {
        let besideTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("kbuild").path
        path = FileManager.default.isExecutableFile(atPath: besideTests) ? besideTests
            : URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent(".build/debug/kbuild").path
    }
    // The first test to run kbuild starts making the shared stacks, which take minutes, beside the tests that need none.
    SharedStacks.start(binary: path)
    return path
}()

struct Result {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a program to completion and captures its output.
@discardableResult
func sh(_ tool: String, _ args: [String], env: [String: String] = [:], stdin: Data? = nil, cwd: String? = nil) throws -> Result {
    let p = Process()
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = args
    var environment = ProcessInfo.processInfo.environment
    environment.removeValue(forKey: "KBUILD_DATA_DIR")
    for (k, v) in env { environment[k] = v }
    p.environment = environment
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let input = Pipe()
    if stdin != nil { p.standardInput = input }
    try p.run()
    if let stdin {
        input.fileHandleForWriting.write(stdin)
        try input.fileHandleForWriting.close()
    }
    // Read both pipes concurrently so neither fills up and blocks the child.
    let errData = UnsafeBox<Data>(Data())
    let reader = Thread { errData.value = err.fileHandleForReading.readDataToEndOfFile() }
    reader.start()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    while !reader.isFinished { usleep(1000) }
    return Result(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData.value, as: UTF8.self))
}

final class UnsafeBox<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

func kbuild(_ args: [String], dataDir: String, env: [String: String] = [:]) throws -> Result {
    try sh(kbuildBinary, args + ["--data-dir", dataDir], env: env)
}

func tempDir(_ test: XCTestCase, _ name: String) throws -> String {
    let path = NSTemporaryDirectory() + "kbuild-cli-\(name)-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    test.addTeardownBlock {
        _ = try? sh("/bin/chmod", ["-R", "u+rwX", path])
        try? FileManager.default.removeItem(atPath: path)
    }
    return path
}

/// `find DIR -printf` of names, modes, types, link targets and file sizes.
func treeListing(_ dir: String) throws -> [String] {
    let r = try sh("/usr/bin/find", [dir, "-mindepth", "1", "-printf", "%P|%m|%y|%l|%s\n"])
    return r.stdout.split(separator: "\n").map { line in
        let parts = line.split(separator: "|", omittingEmptySubsequences: false)
        return parts[2] == "d" ? parts[0..<4].joined(separator: "|") : String(line)
    }.sorted()
}

/// A running `kbuild up`: its process, base URL and admin token.
struct KbuildServer {
    let process: Process
    let url: String
    let token: String
    /// host:port, as registries and git remotes name it.
    var hostPort: String { url.replacingOccurrences(of: "http://", with: "") }
}

/// Starts `kbuild up` on a free port (or `port`) and waits for its startup lines; killed at teardown.
/// `environment` is added to the test's own.
func startKbuildUp(_ test: XCTestCase, data: String, port: Int = 0, extra: [String] = [], environment added: [String: String] = [:]) throws -> KbuildServer {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: kbuildBinary)
    // Tests run several kbuild ups: each router gets a port of its own unless one is asked for.
    let router = extra.contains("--router-port") ? [] : ["--router-port", "0"]
    let tls = (extra.contains("--tls-port") ? [] : ["--tls-port", "0"]) + (extra.contains("--https-port") ? [] : ["--https-port", "0"])
    p.arguments = ["up", "--port", String(port), "--data-dir", data] + router + tls + extra
    var environment = ProcessInfo.processInfo.environment.merging(added) { _, new in new }
    environment.removeValue(forKey: "KBUILD_DATA_DIR")
    p.environment = environment
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.standardError
    try p.run()
    test.addTeardownBlock {
        // Gracefully first, so an agent in the middle of starting a process writes it down (kbuild down then stops it).
        if p.isRunning {
            kill(p.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(15)
            while p.isRunning && Date() < deadline { usleep(20_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
        }
        // Foundation's Process can lose track of a child: make sure by its command line (a reused PID is not ours).
        let cmdline = FileManager.default.contents(atPath: "/proc/\(p.processIdentifier)/cmdline").map { String(decoding: $0, as: UTF8.self) } ?? ""
        if cmdline.contains("up\u{0}") && cmdline.contains(data) { kill(p.processIdentifier, SIGKILL) }
        // App processes outlive kbuild up by design: stop them with it.
        _ = try? sh(kbuildBinary, ["down", "--grace", "2", "--data-dir", data])
    }
    // Read the startup lines (bounded): one line per thing served.
    var text = ""
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline && !text.contains("/v1/objects/\n") {
        let chunk = out.fileHandleForReading.availableData
        if chunk.isEmpty { break }
        text += String(decoding: chunk, as: UTF8.self)
    }
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("keg ") }),
          let range = line.range(of: "http://") else {
        XCTFail("no keg URL in startup output: \(text)")
        throw CocoaError(.fileReadUnknown)
    }
    let url = String(line[range.lowerBound...]).replacingOccurrences(of: "/v1/objects/", with: "")
    let token = try String(contentsOfFile: data + "/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    return KbuildServer(process: p, url: url, token: token)
}

/// git with a fixed identity and no prompts.
@discardableResult
func git(_ args: [String], in dir: String, env: [String: String] = [:]) throws -> Result {
    try sh("/usr/bin/git", ["-C", dir, "-c", "user.name=Grace Hopper", "-c", "user.email=grace@example.com", "-c", "init.defaultBranch=main"] + args,
           env: ["GIT_TERMINAL_PROMPT": "0"].merging(env) { _, new in new })
}

func writeFile(_ path: String, _ text: String, mode: mode_t = 0o644) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    chmod(path, mode)
}

func trimmed(_ s: String) -> String { s.trimmingCharacters(in: .whitespacesAndNewlines) }

/// The repository's root, for examples/ and buildpacks/.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// Starts a server process with stdio on /dev/null; the caller kills and reaps it.
func spawnServer(_ path: String, _ args: [String], output: String = "/dev/null") throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let argv = ([path] + args).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
    guard rc == 0 else { throw NSError(domain: NSPOSIXErrorDomain, code: Int(rc)) }
    return pid
}

/// Whether something accepts TCP connections on 127.0.0.1:port.
func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// A TCP port nothing listens on right now.
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Waits for a spawned process; its exit status.
func reap(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}

/// One data dir for the whole test run with the busybox stack and the Debian
/// stack (`stack create debian`: debootstrap trixie from this host's mirror,
/// its run and build images, two minutes or more), made once in the
/// background from the start of the run and shared by the test classes that
/// build real apps; each uses apps of its own names.
enum SharedStacks {
    /// `KBUILD_TEST_STACKS=DIR` (a developer's shortcut, never set in CI): the stacks are made in DIR once and kept,
    /// and later runs reuse them instead of making them again, as an older build made them (remove DIR, or
    /// `kbuild stack create` the one you changed there, after changing how a stack is made).
    static let kept = ProcessInfo.processInfo.environment["KBUILD_TEST_STACKS"].flatMap { $0.isEmpty ? nil : $0 }
    static let directory = kept ?? NSTemporaryDirectory() + "kbuild-cli-stacks-\(getpid())"
    static let log = directory + ".log"
    static let maker = UnsafeBox<Process?>(nil)

    /// Starts `stack create busybox && stack create debian && stack create debian-13-addons`, then `debian-12` and
    /// `debian-12-addons` (for the PostgreSQL 15 → 17 upgrade), in `directory` (once).
    static func start(binary: String) {
        // Those of earlier runs (their test process is gone) are 2 GB each: removed first.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory())) ?? [] where name.hasPrefix("kbuild-cli-stacks-") {
            let pid = Int32(name.dropFirst("kbuild-cli-stacks-".count).prefix { $0.isNumber }) ?? 0
            if pid != getpid(), kill(pid, 0) != 0 { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + name) }
        }
        if kept == nil {
            try? FileManager.default.removeItem(atPath: directory)
            try? FileManager.default.removeItem(atPath: firstDone)
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "test -e \"$2\" && touch \"$1\" && exit 0; "
                       + "\"$0\" stack create busybox && \"$0\" stack create debian && \"$0\" stack create debian-13-addons && touch \"$1\" "
                       + "&& \"$0\" stack create debian-12 && \"$0\" stack create debian-12-addons && touch \"$2\"", binary, firstDone, directory + "/.stacks-made"]
        var environment = ProcessInfo.processInfo.environment
        environment["KBUILD_DATA_DIR"] = directory
        p.environment = environment
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let out = FileHandle(forWritingAtPath: log)
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { print("failed to start making the shared stacks: \(error)") }
        maker.value = p
        if kept == nil { XCTestObservationCenter.shared.addTestObserver(RemoveAtEnd(directory, log: log)) }
    }

    /// Made once busybox, debian-13 and debian-13-addons are (debian-12 is made after, in the same data dir).
    static let firstDone = directory + ".first-done"

    /// How `stack create busybox && stack create debian && stack create debian-13-addons` went (its Debian stack is
    /// debian-13, with debian-13-build); waits for it, not for debian-12.
    static let debian: Result? = {
        _ = kbuildBinary
        guard let p = maker.value else { return nil }
        while p.isRunning && !FileManager.default.fileExists(atPath: firstDone) { usleep(200_000) }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        if FileManager.default.fileExists(atPath: firstDone) { return Result(status: 0, stdout: text, stderr: text) }
        return Result(status: p.terminationStatus == 0 ? 1 : p.terminationStatus, stdout: text, stderr: text)
    }()

    /// How the whole chain went, debian-12 and debian-12-addons too; waits for it.
    static let debian12: Result? = {
        _ = debian
        guard let p = maker.value else { return nil }
        p.waitUntilExit()
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return Result(status: p.terminationStatus, stdout: text, stderr: text)
    }()

    /// The data dir, once its stacks are made.
    static var data: String {
        let made = debian
        precondition(made?.status == 0, "making the shared stacks failed: \(made?.stderr ?? "not started")")
        return directory
    }
}

/// Stops what a data dir's agents started and removes the data dir when the test bundle finishes.
final class RemoveDataDirAtEnd: NSObject, XCTestObservation, @unchecked Sendable {
    let path: String
    init(_ path: String) { self.path = path }
    func testBundleDidFinish(_ testBundle: Bundle) {
        _ = try? sh(kbuildBinary, ["down", "--grace", "1", "--data-dir", path])
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Removes a directory when the test bundle finishes.
final class RemoveAtEnd: NSObject, XCTestObservation, @unchecked Sendable {
    let path: String
    let log: String
    init(_ path: String, log: String) {
        self.path = path
        self.log = log
    }
    func testBundleDidFinish(_ testBundle: Bundle) {
        SharedStacks.maker.value?.terminate()
        SharedStacks.maker.value?.waitUntilExit()
        _ = try? sh(kbuildBinary, ["down", "--grace", "1", "--data-dir", path])
        try? FileManager.default.removeItem(atPath: path)
        try? FileManager.default.removeItem(atPath: log)
        try? FileManager.default.removeItem(atPath: SharedStacks.firstDone)
    }
}
