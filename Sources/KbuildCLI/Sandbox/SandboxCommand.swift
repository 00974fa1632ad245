import ArgumentParser
import Dispatch
import Foundation
import KbuildCore
import Sandbox
import Stacks

struct SandboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "Run commands in kbuild's sandbox (namespaces, overlay root, cgroup limits).",
        subcommands: [SandboxRun.self, SandboxBench.self]
    )
}

/// Options shared by `sandbox run` and `sandbox bench`: where the root comes from.
struct RootOptions: ParsableArguments {
    @Option(help: "The stack to run on (`kbuild stack ls`); none for only --lower dirs.") var stack = "debian"
    @Option(name: .customLong("lower"), help: ArgumentHelp("A directory layered read-only above the stack (repeatable; the last is topmost).", valueName: "dir"))
    var lowers: [String] = []

    func lowerDirs(_ global: GlobalOptions) async throws -> (dirs: [String], stack: Stack?) {
        var dirs = lowers.map { $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0 }.reversed() as [String]
        guard stack != "none" else { return (dirs, nil) }
        let stacks = try global.openStacks()
        let found = try await stacks.find(stack)
        dirs += try stacks.lowerDirs(for: found)
        return (dirs, found)
    }
}

struct SandboxRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a command in a sandbox; its exit status is passed through.",
        discussion: """
            The command runs as root inside new user, mount, PID, UTS and IPC namespaces (and a loopback-only network namespace with --network none, the default), over an overlay of the stack, with a fresh /proc, a minimal /dev and a tmpfs /tmp. Root inside is uid 0x70000000 outside. Writes go to a tmpfs upper layer (--disk) and vanish at exit unless --upper keeps them.

            Killed for running out of memory or time: status 137, and a line on stderr saying which. A command not in the stack: 127.

            Example: kbuild sandbox run --stack debian -- python3 -c 'print(1)'
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var root: RootOptions
    @Option(help: "none (loopback only), host, or a network namespace name (/run/netns/NAME) or path.") var network = "none"
    @Option(help: "Memory limit, e.g. 256M or 1G (bytes; K, M, G are powers of 1024).") var memory = "512M"
    @Option(help: "Most processes and threads.") var pids = 4096
    @Option(help: "CPU limit in cores, e.g. 0.5.") var cpus: Double?
    @Option(help: "Kill the whole sandbox after this long, e.g. 30s or 10m.") var timeout: String?
    @Option(help: "Size of /tmp and of /dev/shm.") var tmpSize = "256M"
    @Option(help: "How much the command may write to its root filesystem.") var disk = "1G"
    @Option(name: .customLong("env"), help: ArgumentHelp("Set a variable (repeatable).", valueName: "K=V")) var env: [String] = []
    @Option(help: "The working directory inside.") var workdir = "/"
    @Option(help: ArgumentHelp("The user inside, UID[:GID].", valueName: "uid[:gid]")) var user = "0"
    @Option(help: "The hostname inside.") var hostname = "kbuild"
    @Option(name: .customLong("mount"), help: ArgumentHelp("Bind a host path (repeatable).", valueName: "src:dst[:ro]")) var mounts: [String] = []
    @Option(help: ArgumentHelp("Keep the root's changes in DIR/upper.", valueName: "dir")) var upper: String?
    @Flag(name: .shortAndLong, help: "Pass stdin through.") var interactive = false
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

    func run() async throws {
        let words = command.first == "--" ? Array(command.dropFirst()) : command
        guard !words.isEmpty else { throw KbuildError(.invalidArgument, "no command given: kbuild sandbox run [options] -- CMD ARGS…") }
        let (lowerDirs, _) = try await root.lowerDirs(global)
        var environment = SandboxSpec.defaultEnvironment
        for pair in env {
            guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                throw KbuildError(.invalidArgument, "invalid --env \(pair.debugDescription): want K=V")
            }
            environment[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
        }
        let ids = user.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(ids.count), let uid = UInt32(ids[0]), let gid = ids.count == 2 ? UInt32(ids[1]) : uid else {
            throw KbuildError(.invalidArgument, "invalid --user \(user.debugDescription): want UID or UID:GID")
        }
        var spec = SandboxSpec(command: words, lowerDirs: lowerDirs, environment: environment,
                               workingDirectory: workdir, user: uid, group: gid, hostname: hostname,
                               upperDir: upper.map { $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0 },
                               network: try SandboxNetwork(parsing: network),
                               stdin: interactive ? .fd(0) : .null, stdout: .fd(1), stderr: .fd(2))
        spec.mounts = try mounts.map(parseMount)
        spec.limits = SandboxLimits(memory: try parseBytes(memory, what: "--memory"), pids: pids, cpus: cpus,
                                    timeout: try timeout.map { .seconds(try parsePositiveDuration($0, what: "--timeout")) },
                                    tmpSize: try parseBytes(tmpSize, what: "--tmp-size"), upperSize: try parseBytes(disk, what: "--disk"))
        let sandbox = try Sandbox()
        let ready = spec
        let result: SandboxResult
        do {
            result = try await untilSignalled { try await sandbox.run(ready) }
        } catch let error as KbuildError where error.code == .notFound && error.message.contains("command not found") {
            // As a shell says it: 127.
            FileHandle.standardError.write(Data("kbuild: \(error.message)\n".utf8))
            throw ExitCode(127)
        }
        switch result.termination {
        case .outOfMemory: FileHandle.standardError.write(Data("kbuild: sandbox \(result.summary) (--memory \(memory))\n".utf8))
        case .timedOut: FileHandle.standardError.write(Data("kbuild: sandbox \(result.summary) after \(timeout ?? "")\n".utf8))
        case .cancelled: FileHandle.standardError.write(Data("kbuild: sandbox \(result.summary) by a signal\n".utf8))
        default: break
        }
        if result.exitStatus != 0 { throw ExitCode(result.exitStatus) }
    }

    func parseMount(_ text: String) throws -> SandboxMount {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || (parts.count == 3 && (parts[2] == "ro" || parts[2] == "rw")), !parts[0].isEmpty, !parts[1].isEmpty else {
            throw KbuildError(.invalidArgument, "invalid --mount \(text.debugDescription): want SRC:DST or SRC:DST:ro")
        }
        let source = parts[0].hasPrefix("/") ? parts[0] : FileManager.default.currentDirectoryPath + "/" + parts[0]
        return SandboxMount(source: source, target: parts[1], readOnly: parts.count == 3 && parts[2] == "ro")
    }
}

/// Runs `body`; SIGINT, SIGTERM or SIGHUP cancel it (so the sandbox and its
/// cgroup are cleaned up) and it still returns what `body` returns.
func untilSignalled<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            let signals = [SIGINT, SIGTERM, SIGHUP]
            let stream = AsyncStream<Int32> { continuation in
                let sources = SignalSources(signals.map { sig in
                    signal(sig, SIG_IGN)
                    let source = DispatchSource.makeSignalSource(signal: sig)
                    source.setEventHandler { continuation.yield(sig) }
                    source.resume()
                    return source
                })
                continuation.onTermination = { _ in sources.cancel() }
            }
            for await _ in stream { return nil }
            return nil
        }
        while let next = try await group.next() {
            if let value = next {
                group.cancelAll()
                return value
            }
            // A signal (or the watcher ending): cancel the work and wait for its result.
            group.cancelAll()
        }
        throw CancellationError()
    }
}

/// Dispatch signal sources, cancelled together (they are thread-safe; Dispatch does not say so).
private final class SignalSources: @unchecked Sendable {
    let sources: [any DispatchSourceSignal]
    init(_ sources: [any DispatchSourceSignal]) { self.sources = sources }
    func cancel() { sources.forEach { $0.cancel() } }
}

func parsePositiveDuration(_ text: String, what: String) throws -> Double {
    if text.hasPrefix("-") { throw KbuildError(.invalidArgument, "invalid \(what) \(text.debugDescription): must be positive") }
    let seconds = try parseDuration(text)
    guard seconds > 0 else { throw KbuildError(.invalidArgument, "invalid \(what) \(text.debugDescription): must be positive") }
    return seconds
}
