import ArgumentParser
import Foundation
import Synchronization
import GitGateway
import KbuildCore
import Sandbox
import KbuildState
import KbuildClient

struct GitShellCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "git-shell",
        abstract: "sshd's forced command for kbuild's keys: runs git receive-pack or upload-pack of an app, nothing else."
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "The name of the key that connected.") var key: String

    func run() async throws {
        do {
            let (service, app) = try GitShell.parse(ProcessInfo.processInfo.environment["SSH_ORIGINAL_COMMAND"])
            let apps = try global.openApps()
            _ = try await apps.get(app)
            setenv("KBUILD_PUSHER", key, 1)
            setenv("KBUILD_REPOSITORY_URL", "ssh:\(app).git", 1)
            setenv("KBUILD_DATA_DIR", global.dir.root.path, 1)
            let argv = ["git", service.rawValue, apps.repository(app)]
            var cArgs = argv.map { strdup($0) } + [nil]
            execv("/usr/bin/git", &cArgs)
            throw KbuildError.syscall("execv", "/usr/bin/git", verb: "run git \(service.rawValue)")
        } catch let error as KbuildError {
            FileHandle.standardError.write(Data("kbuild: \(error.message)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct HookCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hook",
        abstract: "git hooks of app repositories (installed by apps:create; not for direct use).",
        subcommands: [PreReceive.self]
    )
}

extension PreReceive {
    /// Whether the server that ran git (`KBUILD_SERVER_PID`) has exited: no such
    /// process, or a zombie (its parent has not reaped it yet). An SSH push names
    /// none: sshd closes the pipes, and the next write ends the hook.
    static func isGone(_ pid: Int32?) -> Bool {
        guard let pid else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].split(separator: " ").first == "Z"
    }
}

struct PreReceive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pre-receive",
        abstract: "Build each push to the deploy branch; reject the push when the build fails."
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "The app whose repository this is.") var app: String

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        let input = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        // The pusher is gone (git, or kbuild up, died): noted at the write, and the hook hangs up on the control
        // plane at its next look (`PushHook.pusherGone`), which then deploys nothing and leaves no build queued for it alone.
        let hungUp = Atomic<Bool>(false)
        // A write to a pusher that is gone must fail with EPIPE (and be noted), not kill the hook before it tidies up.
        signal(SIGPIPE, SIG_IGN)
        let say: @Sendable (String) -> Void = { text in
            let bytes = Array(text.utf8)
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = write(2, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 && errno == EINTR { continue }
                    if n < 0 && errno == EPIPE { hungUp.store(true, ordering: .relaxed) }
                    if n <= 0 { return }
                    offset += n
                }
            }
        }
        let serverPID = env["KBUILD_SERVER_PID"].flatMap { Int32($0) }
        do {
            // The control plane of this machine's data dir, as the admin, on the pusher's behalf.
            let dir = global.dir
            guard let url = (try? String(contentsOf: dir.serverURLFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines),
                  !url.isEmpty else {
                throw KbuildError(.unsatisfiable, "kbuild is not running on \(dir.root.path) (no \(dir.serverURLFile.path)): nothing can deploy this push")
            }
            let pusher = env["KBUILD_PUSHER"] ?? env["REMOTE_USER"] ?? currentActor
            let hook = PushHook(keg: try global.openKeg(), client: try KbuildClient(base: url, token: try AdminToken.loadOrCreate(in: dir), actor: pusher),
                                app: app, pusher: pusher,
                                repositoryURL: env["KBUILD_REPOSITORY_URL"] ?? AppStore.gitRoot(dir) + "/\(app).git",
                                pusherGone: { hungUp.load(ordering: .relaxed) || PreReceive.isGone(serverPID) },
                                say: say)
            try await hook.run(try PushHook.parseUpdates(input))
        } catch {
            let message = (error as? KbuildError)?.message ?? "\(error)"
            say("\n !     \(message)\n\n")
            throw ExitCode(1)
        }
    }
}
