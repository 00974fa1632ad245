import KbuildCore
import Foundation

/// What to run in a sandbox, and over which root. A value: `validate()` says
/// whether it makes sense before anything is created.
public struct SandboxSpec: Sendable {
    /// argv; the first word is a path or a name looked up in `PATH` inside the sandbox.
    public var command: [String]
    /// The whole environment of the command (nothing is inherited from the caller).
    public var environment: [String: String]
    public var workingDirectory: String
    /// Ids inside the sandbox (0 is root inside, an unprivileged id outside).
    public var user: UInt32
    public var group: UInt32
    public var hostname: String
    /// Read-only lower dirs of the overlay root (Keg checkouts), topmost first.
    public var lowerDirs: [String]
    /// A kept upper layer: a directory kbuild owns; the sandbox's changes land in
    /// `upperDir/upper`. Nil: a tmpfs upper of `limits.upperSize`, gone at exit.
    public var upperDir: String?
    /// Extra bind mounts (the app dir, the build cache).
    public var mounts: [SandboxMount]
    public var network: SandboxNetwork
    public var limits: SandboxLimits
    public var stdin: SandboxInput
    /// stdin is a terminal made for this command alone (kbuild run's): the command takes it as its controlling terminal.
    public var stdinIsOwnTerminal = false
    public var stdout: SandboxOutput
    public var stderr: SandboxOutput
    /// Kill the sandbox when this process exits (builds, `sandbox run`). App
    /// processes that must outlive a restart of their agent set this to false.
    public var dieWithCaller: Bool

    public init(
        command: [String], lowerDirs: [String], environment: [String: String] = SandboxSpec.defaultEnvironment,
        workingDirectory: String = "/", user: UInt32 = 0, group: UInt32 = 0, hostname: String = "kbuild",
        upperDir: String? = nil, mounts: [SandboxMount] = [], network: SandboxNetwork = .none,
        limits: SandboxLimits = SandboxLimits(), stdin: SandboxInput = .null,
        stdout: SandboxOutput = .pipe, stderr: SandboxOutput = .pipe, dieWithCaller: Bool = true
    ) {
        self.command = command
        self.lowerDirs = lowerDirs
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.user = user
        self.group = group
        self.hostname = hostname
        self.upperDir = upperDir
        self.mounts = mounts
        self.network = network
        self.limits = limits
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.dieWithCaller = dieWithCaller
    }

    public static let defaultEnvironment: [String: String] = [
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
    ]

    /// Checks everything that can be checked without touching the system.
    public func validate() throws {
        if case .lines = stderr { throw KbuildError(.invalidArgument, "invalid sandbox output: stderr cannot be .lines (stdout's .lines takes both)") }
        if case .lines = stdout, stderr != .discard {
            throw KbuildError(.invalidArgument, "invalid sandbox output: with stdout .lines, stderr goes to the same log (give .discard)")
        }
        func bad(_ why: String) -> KbuildError { KbuildError(.invalidArgument, "invalid sandbox: \(why)") }
        guard let first = command.first, !first.isEmpty else { throw bad("no command given") }
        for word in command where word.utf8.contains(0) { throw bad("the command has a NUL byte in \(word.debugDescription)") }
        for (key, value) in environment {
            if key.isEmpty || key.contains("=") || key.utf8.contains(0) || value.utf8.contains(0) {
                throw bad("environment variable \(key.debugDescription) is malformed")
            }
        }
        try SandboxSpec.checkInsidePath(workingDirectory, what: "working directory")
        guard !hostname.isEmpty, hostname.utf8.count <= 64,
              hostname.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x2e || ($0 >= 0x41 && $0 <= 0x5a) })
        else { throw bad("hostname \(hostname.debugDescription) must be 1 to 64 letters, digits, '-' or '.'") }
        guard !lowerDirs.isEmpty else { throw bad("no lower dir (a stack) given") }
        guard lowerDirs.count <= 64 else { throw bad("\(lowerDirs.count) lower dirs; at most 64") }
        for dir in lowerDirs where !dir.hasPrefix("/") { throw bad("lower dir \(dir.debugDescription) is not an absolute path") }
        if let upperDir, !upperDir.hasPrefix("/") { throw bad("upper dir \(upperDir.debugDescription) is not an absolute path") }
        guard mounts.count <= 32 else { throw bad("\(mounts.count) mounts; at most 32") }
        for mount in mounts {
            guard mount.source.hasPrefix("/") else { throw bad("mount source \(mount.source.debugDescription) is not an absolute path") }
            try SandboxSpec.checkInsidePath(mount.target, what: "mount target")
            let target = SandboxSpec.canonical(mount.target)
            if target == "/" || ["/proc", "/dev", "/tmp"].contains(where: { target == $0 || target.hasPrefix($0 + "/") }) {
                throw bad("mount target \(mount.target) is where the sandbox mounts its own /proc, /dev or /tmp")
            }
        }
        if case .namespace(let name) = network, name.isEmpty || name.utf8.contains(0) {
            throw bad("network namespace name is empty")
        }
        try limits.validate()
    }

    /// `/a//b/` as `/a/b`.
    static func canonical(_ path: String) -> String {
        "/" + path.split(separator: "/", omittingEmptySubsequences: true).joined(separator: "/")
    }

    static func checkInsidePath(_ path: String, what: String) throws {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard path.hasPrefix("/"), !path.utf8.contains(0), path.utf8.count < 4096,
              !parts.contains(where: { $0 == ".." || $0 == "." })
        else { throw KbuildError(.invalidArgument, "invalid sandbox: \(what) \(path.debugDescription) must be an absolute path without . or .. components") }
    }
}

/// A bind mount from the host into the sandbox.
public struct SandboxMount: Sendable, Equatable {
    public var source: String
    public var target: String
    public var readOnly: Bool
    /// Show host root's files as root's inside (an idmapped mount), so that the
    /// sandbox's root can change them. What it writes is then root's on disk,
    /// setuid files too, so a read-write idmapped source must be where only root
    /// can reach (under a 0700 directory, as kbuild's data dir is): `run`
    /// refuses it elsewhere. Without idmap, host root's files are nobody's
    /// inside, and what the sandbox writes belongs to its unprivileged host id.
    public var idmap: Bool

    /// `idmap` nil: read-only mounts and sources only root can reach are idmapped, others not.
    public init(source: String, target: String, readOnly: Bool, idmap: Bool? = nil) {
        self.source = source
        self.target = target
        self.readOnly = readOnly
        self.idmap = idmap ?? (readOnly || SandboxMount.onlyRootCanReach(source))
    }

    /// Whether some directory on the way to `path` (or `path` itself) is root's and
    /// closed to group and others, so no other host user can reach what is below.
    public static func onlyRootCanReach(_ path: String) -> Bool {
        var dir = (path as NSString).resolvingSymlinksInPath
        while true {
            var st = stat()
            if stat(dir, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, st.st_uid == 0, st.st_mode & 0o011 == 0 { return true }
            if dir == "/" || dir.isEmpty { return false }
            dir = (dir as NSString).deletingLastPathComponent
        }
    }
}

public enum SandboxNetwork: Sendable, Equatable {
    /// A new network namespace with only loopback (the default for builds).
    case none
    /// The host's network (app processes that bind $PORT).
    case host
    /// A named namespace: a name under /run/netns (`ip netns add`) or an absolute path.
    case namespace(String)

    public init(parsing text: String) throws {
        switch text {
        case "none": self = .none
        case "host": self = .host
        case let name where !name.isEmpty: self = .namespace(name)
        default: throw KbuildError(.invalidArgument, "invalid network \(text.debugDescription): use none, host or a namespace name")
        }
    }

    var path: String? {
        guard case .namespace(let name) = self else { return nil }
        return name.hasPrefix("/") ? name : "/run/netns/" + name
    }
}

/// Limits. Nil means none (beyond the host's).
public struct SandboxLimits: Sendable, Equatable {
    /// Bytes of memory (cgroup), tmpfs contents included.
    public var memory: UInt64?
    /// Processes and threads (cgroup).
    public var pids: Int?
    /// CPU time as a number of cores (cgroup CFS quota), e.g. 0.5.
    public var cpus: Double?
    /// Wall clock from start to the end of the command; the whole tree is killed.
    public var timeout: Duration?
    /// Size of /tmp and of /dev/shm (each).
    public var tmpSize: UInt64
    /// Size of the tmpfs upper layer: how much the command can write to its root.
    public var upperSize: UInt64
    /// RLIMIT_NOFILE.
    public var openFiles: UInt64

    public init(memory: UInt64? = nil, pids: Int? = nil, cpus: Double? = nil, timeout: Duration? = nil,
                tmpSize: UInt64 = 256 << 20, upperSize: UInt64 = 1 << 30, openFiles: UInt64 = 65536) {
        self.memory = memory
        self.pids = pids
        self.cpus = cpus
        self.timeout = timeout
        self.tmpSize = tmpSize
        self.upperSize = upperSize
        self.openFiles = openFiles
    }

    /// Whether the sandbox needs a cgroup of its own.
    var needsCgroup: Bool { memory != nil || pids != nil || cpus != nil }

    public func validate() throws {
        func bad(_ why: String) -> KbuildError { KbuildError(.invalidArgument, "invalid sandbox limit: \(why)") }
        if let memory, memory < 4 << 20 { throw bad("memory \(memory) bytes is below the minimum of 4 MiB") }
        if let pids, pids < 1 || pids > 4_194_304 { throw bad("pids \(pids) must be between 1 and 4194304") }
        if let cpus, !(cpus >= 0.01 && cpus <= 1024) { throw bad("cpus \(cpus) must be between 0.01 and 1024") }
        if let timeout, timeout <= .zero { throw bad("timeout \(timeout) must be positive") }
        if tmpSize < 4096 { throw bad("tmp size \(tmpSize) bytes is below 4 KiB") }
        if upperSize < 1 << 20 { throw bad("upper size \(upperSize) bytes is below 1 MiB") }
        if openFiles < 16 || openFiles > 1 << 20 { throw bad("open files \(openFiles) must be between 16 and 1048576") }
    }
}

public enum SandboxInput: Sendable, Equatable {
    case null
    /// A descriptor of the caller's, shared (e.g. 0 for a terminal).
    case fd(Int32)
}

public enum SandboxOutput: Sendable, Equatable {
    case discard
    /// A descriptor of the caller's, shared (e.g. 1 to pass output straight through).
    case fd(Int32)
    /// Delivered to the `output` callback of `Sandbox.run` as it is written.
    case pipe
    /// For stdout only (stderr then `.discard`): stdout and stderr go, line by
    /// line, to this log file, each line prefixed with its UTC time and `o` or
    /// `e` by the sandbox's helper (`2026-11-24T10:00:00.123456Z o text`), so
    /// lines are whole and timed even while no kbuild watches. With a `cap`
    /// (bytes, 0 for none) the helper keeps the file under it as it writes:
    /// past the cap, the oldest half is dropped and a `k` line says so.
    case lines(Int32, cap: UInt64 = 0)
}

public enum SandboxStream: Sendable, Equatable {
    case stdout
    case stderr
}

/// How a sandboxed command ended.
public struct SandboxResult: Sendable, Equatable {
    public enum Termination: Sendable, Equatable {
        case exited(Int32)
        case signaled(Int32)
        /// The kernel's OOM killer killed a process at the memory limit.
        case outOfMemory
        case timedOut
        case cancelled
    }

    public var termination: Termination
    /// Peak memory of the sandbox's cgroup, when it had one.
    public var peakMemory: UInt64?

    /// A shell's view: the code, or 128 + signal; 137 for OOM, timeout and cancel.
    public var exitStatus: Int32 {
        switch termination {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        case .outOfMemory, .timedOut, .cancelled: 137
        }
    }

    public var summary: String {
        switch termination {
        case .exited(let code): "exited with code \(code)"
        case .signaled(let signal): "killed by signal \(signal)"
        case .outOfMemory: "killed: out of memory (the memory limit was reached)"
        case .timedOut: "killed: timed out"
        case .cancelled: "killed: cancelled"
        }
    }
}
