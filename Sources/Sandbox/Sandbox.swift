import KbuildCore
import CSandbox
import Foundation
import Synchronization

/// The host ids a sandbox's ids map to: 0 inside is `base` outside, an id no
/// host user has. Every sandbox uses the same range; PID, mount and network
/// namespaces keep them apart.
public struct IDRange: Sendable, Equatable {
    public var base: UInt32
    public var count: UInt32

    public init(base: UInt32, count: UInt32) {
        self.base = base
        self.count = count
    }

    /// 0x70000000, past systemd's container range, 65,536 ids.
    public static let `default` = IDRange(base: 0x7000_0000, count: 65536)

    var map: String { "0 \(base) \(count)\n" }
}

/// Runs commands in sandboxes: new user, mount, PID, UTS, IPC (and network)
/// namespaces over an overlay root, limited by a cgroup, killed whole at a
/// timeout. One per process; `run` may be called concurrently.
public final class Sandbox: Sendable {
    public let ids: IDRange
    public let cgroups: CgroupLayout?
    /// A user namespace with the sandboxes' id map, held open: lower dirs and
    /// bind mounts are idmapped through it, so host root's files are root's inside.
    private let idmapNamespace: Int32
    private let counter = Atomic<UInt64>(0)

    public init(ids: IDRange = .default, cgroups: CgroupLayout? = CgroupLayout.detect()) throws {
        self.ids = ids
        self.cgroups = cgroups
        var err = [CChar](repeating: 0, count: 512)
        let map = ids.map
        let fd = kb_sb_userns(map, map, &err, err.count)
        guard fd >= 0 else { throw KbuildError(.io, "failed to create the sandboxes' user namespace: \(cString(err))") }
        idmapNamespace = fd
    }

    deinit { close(idmapNamespace) }

    /// Runs `spec` to the end. Output sent to `.pipe` arrives at `output` as it
    /// is written (on a thread of the sandbox's own). Cancelling the task kills
    /// the sandbox. Throws when the sandbox cannot start (a clear message naming
    /// the step and the object); a command that starts and fails is a result.
    public func run(_ spec: SandboxSpec,
                    output: @escaping @Sendable (SandboxStream, [UInt8]) -> Void = { _, _ in }) async throws -> SandboxResult {
        try spec.validate()
        let id = "sb-\(getpid())-\(counter.add(1, ordering: .relaxed).newValue)-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        var cgroup: Cgroup?
        if spec.limits.needsCgroup {
            guard let cgroups else {
                throw KbuildError(.invalidArgument, "failed to limit the sandbox: no cgroup hierarchy (v1 or v2) under /sys/fs/cgroup")
            }
            cgroup = try Cgroup.create(id: id, limits: spec.limits, layout: cgroups)
        }
        let launch: Launch
        do {
            launch = try Launch(spec: spec, cgroup: cgroup, sandbox: self)
        } catch {
            try? cgroup?.remove()
            throw error
        }
        let control = Control()
        let result: Result<SandboxResult, KbuildError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let thread = Thread {
                    continuation.resume(returning: launch.run(control: control, output: output))
                }
                thread.name = "kbuild-sandbox"
                thread.start()
            }
        } onCancel: {
            control.cancel()
        }
        launch.closeAll()
        var cleanup: KbuildError?
        do { try cgroup?.remove() } catch { cleanup = KbuildError.wrap(error) }
        let outcome = try result.get()
        if let cleanup { throw cleanup }
        return outcome
    }

    fileprivate func detach(_ path: String, idmap: Bool, readOnly: Bool, what: String) throws -> Int32 {
        var err = [CChar](repeating: 0, count: 600)
        let fd = kb_sb_detach(path, idmap ? idmapNamespace : -1, readOnly ? 1 : 0, &err, err.count)
        guard fd >= 0 else {
            let code: KbuildError.Code = errno == ENOENT ? .notFound : .io
            throw KbuildError(code, "failed to mount \(what) \(path) in the sandbox: \(cString(err))")
        }
        return fd
    }
}

/// Cancellation, shared by the task's handler and the sandbox's thread.
private final class Control: Sendable {
    private struct State {
        var pidfd: Int32 = -1
        var cancelled = false
    }
    private let state = Mutex(State())

    func cancel() {
        state.withLock { s in
            s.cancelled = true
            if s.pidfd >= 0 { kb_sb_signal(s.pidfd, SIGKILL) }
        }
    }

    /// Publishes the running sandbox (or its end, with -1); true if cancelled already.
    func publish(_ pidfd: Int32) -> Bool {
        state.withLock { s in
            s.pidfd = pidfd
            return s.cancelled
        }
    }

    var cancelled: Bool { state.withLock { $0.cancelled } }
}

/// Everything one start needs, prepared in Swift (paths checked, mounts
/// detached, pipes made), then handed to C.
private final class Launch: @unchecked Sendable {
    // Touched by the calling task before the thread starts and after it ends.
    let spec: SandboxSpec
    let cgroup: Cgroup?
    let idMap: String
    var fds: [Int32] = []
    var lowerFDs: [Int32] = []
    var mountFDs: [Int32] = []
    var upperFD: Int32 = -1
    var netnsFD: Int32 = -1
    var stdoutPipe: (read: Int32, write: Int32)?
    var stderrPipe: (read: Int32, write: Int32)?
    var lifeline: (read: Int32, write: Int32)?

    init(spec: SandboxSpec, cgroup: Cgroup?, sandbox: Sandbox) throws {
        self.spec = spec
        self.cgroup = cgroup
        self.idMap = sandbox.ids.map
        do {
            for dir in spec.lowerDirs {
                var st = stat()
                guard stat(dir, &st) == 0 else {
                    throw KbuildError(.notFound, "failed to start the sandbox: lower dir \(dir) does not exist")
                }
                guard st.st_mode & S_IFMT == S_IFDIR else {
                    throw KbuildError(.invalidArgument, "failed to start the sandbox: lower dir \(dir) is not a directory")
                }
                lowerFDs.append(try keep(sandbox.detach(dir, idmap: true, readOnly: true, what: "lower dir")))
            }
            for mount in spec.mounts {
                var st = stat()
                guard stat(mount.source, &st) == 0 else {
                    throw KbuildError(.notFound, "failed to start the sandbox: mount source \(mount.source) does not exist")
                }
                mountFDs.append(try keep(sandbox.detach(mount.source, idmap: mount.idmap, readOnly: mount.readOnly, what: "mount source")))
            }
            if let upper = spec.upperDir {
                for dir in [upper, upper + "/upper", upper + "/work"] where mkdir(dir, 0o700) != 0 && errno != EEXIST {
                    throw KbuildError.syscall("mkdir", dir, verb: "make the sandbox's upper dir")
                }
                upperFD = try keep(sandbox.detach(upper, idmap: true, readOnly: false, what: "upper dir"))
            }
            if let path = spec.network.path {
                netnsFD = open(path, O_RDONLY | O_CLOEXEC)
                guard netnsFD >= 0 else {
                    throw KbuildError(errno == ENOENT ? .notFound : .io,
                                      "failed to start the sandbox: network namespace \(path) cannot be opened: \(String(cString: strerror(errno)))")
                }
                _ = keep(netnsFD)
            }
            if spec.stdout == .pipe { stdoutPipe = try makePipe() }
            if spec.stderr == .pipe { stderrPipe = try makePipe() }
            if spec.dieWithCaller { lifeline = try makePipe() }
        } catch {
            closeAll()
            throw error
        }
    }

    @discardableResult
    private func keep(_ fd: Int32) -> Int32 {
        fds.append(fd)
        return fd
    }

    private func makePipe() throws -> (read: Int32, write: Int32) {
        var p: [Int32] = [-1, -1]
        guard kb_sb_pipe(&p) == 0 else { throw KbuildError.syscall("pipe2", "", verb: "start the sandbox") }
        fds.append(contentsOf: p)
        return (p[0], p[1])
    }

    func closeAll() {
        for fd in fds where fd >= 0 { close(fd) }
        fds.removeAll()
    }

    private func closeNow(_ fd: Int32) {
        guard let i = fds.firstIndex(of: fd) else { return }
        close(fd)
        fds.remove(at: i)
    }

    /// On the sandbox's thread: start, stream, wait, and tell how it ended.
    func run(control: Control, output: @Sendable (SandboxStream, [UInt8]) -> Void) -> Result<SandboxResult, KbuildError> {
        var child = kb_sb_child()
        var err = [CChar](repeating: 0, count: 600)
        let started = ContinuousClock.now
        let rc = withSpec { spec in kb_sb_spawn(spec, &child, &err, err.count) }
        let spawnErrno = errno
        // The child has what it needs; the caller's copies go now, so that EOF means EOF.
        for fd in lowerFDs + mountFDs + [upperFD] { closeNow(fd) }
        if let p = stdoutPipe { closeNow(p.write) }
        if let p = stderrPipe { closeNow(p.write) }
        if let l = lifeline { closeNow(l.read) }
        guard rc == 0 else {
            let message = cString(err)
            let code: KbuildError.Code = spawnErrno == ENOENT && message.contains("command not found") ? .notFound : .io
            return .failure(KbuildError(code, "failed to start the sandbox: \(message)"))
        }
        fds.append(child.pidfd)
        fds.append(child.status_fd)
        if control.publish(child.pidfd) { kb_sb_signal(child.pidfd, SIGKILL) }

        let deadline = spec.limits.timeout.map { started + $0 }
        var timedOut = false
        var exited = false
        var exitedAt = ContinuousClock.now
        var open: [(fd: Int32, stream: SandboxStream)] = []
        if let p = stdoutPipe { open.append((p.read, .stdout)) }
        if let p = stderrPipe { open.append((p.read, .stderr)) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !exited || !open.isEmpty {
            var polls = [pollfd(fd: exited ? -1 : child.pidfd, events: Int16(POLLIN), revents: 0)]
            polls += open.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            var wait: Int32 = -1
            if exited {
                // Everything in the namespace dies with its PID 1; output left in flight gets a bounded wait.
                let left = exitedAt + .seconds(2) - .now
                if left <= .zero { break }
                wait = Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000) + 1
            } else if let deadline, !timedOut {
                let left = deadline - .now
                wait = left <= .zero ? 0 : Int32(min(left.components.seconds, 86_400) * 1000 + left.components.attoseconds / 1_000_000_000_000_000) + 1
            }
            let n = poll(&polls, nfds_t(polls.count), wait)
            if n < 0 && errno != EINTR { break }
            if let deadline, !exited, !timedOut, ContinuousClock.now >= deadline {
                timedOut = true
                kb_sb_signal(child.pidfd, SIGKILL)
                cgroup?.killAll()
            }
            if polls[0].revents != 0 && !exited {
                exited = true
                exitedAt = .now
            }
            var still: [(fd: Int32, stream: SandboxStream)] = []
            for (i, o) in open.enumerated() {
                guard polls[i + 1].revents != 0 else { still.append(o); continue }
                let got = buffer.withUnsafeMutableBytes { read(o.fd, $0.baseAddress, $0.count) }
                if got > 0 {
                    output(o.stream, Array(buffer[0..<got]))
                    still.append(o)
                } else if got < 0 && (errno == EINTR || errno == EAGAIN) {
                    still.append(o)
                }
            }
            open = still
        }
        kb_sb_reap(child.pidfd)
        _ = control.publish(-1)
        var status = kb_sb_status()
        let got = withUnsafeMutableBytes(of: &status) { read(child.status_fd, $0.baseAddress, $0.count) }
        let oom = (cgroup?.oomKills() ?? 0) > 0
        let termination = Launch.termination(status: got == MemoryLayout<kb_sb_status>.size ? status : nil,
                                             timedOut: timedOut, cancelled: control.cancelled, oomKilled: oom)
        return .success(SandboxResult(termination: termination, peakMemory: cgroup?.peakMemory()))
    }

    /// How it ended, from what was seen: a pure decision.
    static func termination(status: kb_sb_status?, timedOut: Bool, cancelled: Bool, oomKilled: Bool) -> SandboxResult.Termination {
        if timedOut { return .timedOut }
        if cancelled { return .cancelled }
        let killed = status.map { $0.kind == 2 && $0.code == SIGKILL } ?? true
        if oomKilled && killed { return .outOfMemory }
        guard let status else { return .signaled(SIGKILL) }  // PID 1 itself was killed
        return status.kind == 2 ? .signaled(status.code) : .exited(status.code)
    }

    /// The C spec, with every string and array alive for the call.
    private func withSpec<T>(_ body: (UnsafePointer<kb_sb_spec>) -> T) -> T {
        var strings: [UnsafeMutablePointer<CChar>] = []
        func c(_ s: String) -> UnsafeMutablePointer<CChar> {
            let p = strdup(s)!
            strings.append(p)
            return p
        }
        defer { strings.forEach { free($0) } }
        var argv: [UnsafePointer<CChar>?] = spec.command.map { UnsafePointer(c($0)) } + [nil]
        var envp: [UnsafePointer<CChar>?] = spec.environment.sorted { $0.key < $1.key }.map { UnsafePointer(c("\($0.key)=\($0.value)")) } + [nil]
        var procs: [UnsafePointer<CChar>?] = (cgroup?.procsFiles ?? []).map { UnsafePointer(c($0)) }
        var mounts = zip(spec.mounts, mountFDs).map { mount, fd in
            var st = stat()
            stat(mount.source, &st)
            return kb_sb_mount(fd: fd, target: UnsafePointer(c(SandboxSpec.canonical(mount.target))), is_dir: st.st_mode & S_IFMT == S_IFDIR ? 1 : 0)
        }
        var rlimitResources: [Int32] = [Int32(RLIMIT_NOFILE.rawValue), Int32(RLIMIT_CORE.rawValue)]
        // Raising a hard limit needs CAP_SYS_RESOURCE in the host's namespace: never above ours.
        var own = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &own)
        let files = min(spec.limits.openFiles, UInt64(own.rlim_max))
        var rlimitValues: [UInt64] = [files, files, 0, 0]
        var lowers = lowerFDs
        var s = kb_sb_spec()
        s.cwd = UnsafePointer(c(SandboxSpec.canonical(spec.workingDirectory)))
        s.uid = spec.user
        s.gid = spec.group
        s.hostname = UnsafePointer(c(spec.hostname))
        s.upper_fd = upperFD
        s.upper_name = UnsafePointer(c(spec.upperDir ?? ""))
        s.upper_tmpfs_bytes = spec.limits.upperSize
        s.tmp_bytes = spec.limits.tmpSize
        switch spec.network {
        case .none: s.net = Int32(KB_SB_NET_NONE)
        case .host: s.net = Int32(KB_SB_NET_HOST)
        case .namespace: s.net = Int32(KB_SB_NET_JOIN)
        }
        s.netns_fd = netnsFD
        s.uid_map = UnsafePointer(c(idMap))
        s.gid_map = UnsafePointer(c(idMap))
        s.stdin_fd = { if case .fd(let fd) = spec.stdin { return fd } else { return -1 } }()
        s.stdout_fd = Launch.fd(spec.stdout, pipe: stdoutPipe)
        s.stderr_fd = Launch.fd(spec.stderr, pipe: stderrPipe)
        s.lifeline_fd = lifeline?.read ?? -1
        return argv.withUnsafeMutableBufferPointer { argv in
            envp.withUnsafeMutableBufferPointer { envp in
                procs.withUnsafeMutableBufferPointer { procs in
                    mounts.withUnsafeMutableBufferPointer { mounts in
                        lowers.withUnsafeMutableBufferPointer { lowers in
                            rlimitResources.withUnsafeMutableBufferPointer { res in
                                rlimitValues.withUnsafeMutableBufferPointer { vals in
                                    s.argv = UnsafePointer(argv.baseAddress)
                                    s.envp = UnsafePointer(envp.baseAddress)
                                    s.cgroup_procs = UnsafePointer(procs.baseAddress)
                                    s.ncgroups = Int32(procs.count)
                                    s.mounts = UnsafePointer(mounts.baseAddress)
                                    s.nmounts = Int32(mounts.count)
                                    s.lower_fds = UnsafePointer(lowers.baseAddress)
                                    s.nlower = Int32(lowers.count)
                                    s.rlimit_resources = UnsafePointer(res.baseAddress)
                                    s.rlimit_values = UnsafePointer(vals.baseAddress)
                                    s.nrlimits = Int32(res.count)
                                    return body(&s)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    private static func fd(_ output: SandboxOutput, pipe: (read: Int32, write: Int32)?) -> Int32 {
        switch output {
        case .discard: -1
        case .fd(let fd): fd
        case .pipe: pipe?.write ?? -1
        }
    }
}

/// The text of a C error buffer.
private func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
