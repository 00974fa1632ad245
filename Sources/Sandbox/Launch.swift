import KbuildCore
import CSandbox
import Foundation
import Synchronization

/// Cancellation, shared by the task's handler and the sandbox's thread.
final class Control: Sendable {
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
/// detached, pipes made), then handed to the helper in one message.
enum Either<L, R> {
    case left(L)
    case right(R)
}

final class Launch: @unchecked Sendable {
    // Touched by the calling task before the thread starts and after it ends.
    let spec: SandboxSpec
    let cgroup: Cgroup?
    let joinInHelper: [String]
    let idMap: String
    let helperPath: String
    var warm: ReadyHelper?
    let pool: HelperPool?
    var fds: [Int32] = []
    var lowerFDs: [Int32] = []
    var mountFDs: [Int32] = []
    /// Whether each mount source is a directory (what to make at the target if it is missing).
    var mountIsDir: [Bool] = []
    var upperFD: Int32 = -1
    var netnsFD: Int32 = -1
    var stdoutPipe: (read: Int32, write: Int32)?
    var stderrPipe: (read: Int32, write: Int32)?

    init(spec: SandboxSpec, cgroup: Cgroup?, joinInHelper: [String], helper: ReadyHelper?, pool: HelperPool?, sandbox: Sandbox) throws {
        self.spec = spec
        self.cgroup = cgroup
        self.joinInHelper = joinInHelper
        self.idMap = sandbox.ids.map
        self.helperPath = sandbox.helper
        self.warm = helper
        self.pool = pool
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
                if mount.idmap && !mount.readOnly && !SandboxMount.onlyRootCanReach(mount.source) {
                    throw KbuildError(.invalidArgument, "refusing a read-write idmapped mount of \(mount.source): the sandbox's root would write files owned by host root there (setuid ones too), and other users can reach it; keep it under a directory only root can enter (mode 0700, like the data dir), or mount it without idmap")
                }
                mountFDs.append(try keep(sandbox.detach(mount.source, idmap: mount.idmap, readOnly: mount.readOnly, what: "mount source")))
                mountIsDir.append(st.st_mode & S_IFMT == S_IFDIR)
            }
            if let upper = spec.upperDir {
                // Not idmapped: what the sandbox writes there is owned by its unprivileged
                // host id, so a setuid file it makes is no one's root on the host.
                for dir in [upper, upper + "/upper", upper + "/work"] {
                    if mkdir(dir, 0o700) != 0 && errno != EEXIST {
                        throw KbuildError.syscall("mkdir", dir, verb: "make the sandbox's upper dir")
                    }
                    guard chown(dir, sandbox.ids.base, sandbox.ids.base) == 0 else {
                        throw KbuildError.syscall("chown", dir, verb: "give the sandbox's root its upper dir")
                    }
                }
                upperFD = try keep(sandbox.detach(upper, idmap: false, readOnly: false, what: "upper dir"))
            }
            if let path = spec.network.path {
                netnsFD = open(path, O_RDONLY | O_CLOEXEC)
                guard netnsFD >= 0 else {
                    throw KbuildError(errno == ENOENT ? .notFound : .io,
                                      "failed to start the sandbox: network namespace \(path) cannot be opened: \(String(cString: strerror(errno)))")
                }
                keep(netnsFD)
            }
            if spec.stdout == .pipe { stdoutPipe = try makePipe() }
            if spec.stderr == .pipe { stderrPipe = try makePipe() }
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

    /// A sandbox whose command runs: what `begin` hands to the watcher.
    struct Begun {
        var helper: ReadyHelper
        var pidfd: Int32
        var status: Int32
        /// PID 1 of the sandbox, as the host sees it.
        var pid: pid_t
        var started: ContinuousClock.Instant
        var reported: ContinuousClock.Instant
        var oomBefore: UInt64
    }

    /// Ends the helper: a warm one with its cgroup, a one-off by EOF on its socket.
    private func finish(_ helper: ReadyHelper, kill: Bool) {
        if kill { Glibc.kill(helper.pid, SIGKILL) }
        if warm != nil {
            helper.discard()
        } else {
            close(helper.socket)
            var st: Int32 = 0
            while waitpid(helper.pid, &st, 0) < 0 && errno == EINTR {}
        }
    }

    /// On the sandbox's thread: hand the spec to a helper, stream, wait, and tell how it ended.
    func run(control: Control, output: @Sendable (SandboxStream, [UInt8]) -> Void) -> Result<SandboxResult, KbuildError> {
        let begun: Begun
        switch begin(control: control) {
        case .failure(let error): return .failure(error)
        case .success(.left(let result)): return .success(result)
        case .success(.right(let b)): begun = b
        }
        return .success(watch(begun, control: control, output: output))
    }

    /// Starts the command and returns once it runs, leaving it to its helper:
    /// an app process that outlives this kbuild. The caller owns the returned
    /// pidfd and status pipe, and reaps the helper.
    func start(control: Control) -> Result<Begun, KbuildError> {
        switch begin(control: control) {
        case .failure(let error): return .failure(error)
        case .success(.left(let result)): return .failure(KbuildError(.io, "failed to start the sandbox: \(result.summary)"))
        case .success(.right(let b)):
            // The helper watches on its own from here; ours are not needed.
            for fd in [b.pidfd, b.status] { if let i = fds.firstIndex(of: fd) { fds.remove(at: i) } }
            close(b.helper.socket)
            _ = control.publish(-1)
            return .success(b)
        }
    }

    /// Up to the helper's report that the command runs (or a result if it never will).
    private func begin(control: Control) -> Result<Either<SandboxResult, Begun>, KbuildError> {
        let started = ContinuousClock.now
        let helper: ReadyHelper
        let report: (read: Int32, write: Int32), status: (read: Int32, write: Int32)
        do {
            report = try makePipe()
            status = try makePipe()
        } catch {
            warm?.discard()
            return .failure(KbuildError.wrap(error))
        }
        do {
            helper = try warm ?? ReadyHelper.spawn(helperPath)
        } catch {
            return .failure(KbuildError.wrap(error))
        }
        func abandon(_ message: String) -> Result<Either<SandboxResult, Begun>, KbuildError> {
            finish(helper, kill: true)
            return .failure(KbuildError(.io, message))
        }
        let oomBefore = cgroup?.oomKills() ?? 0

        // The descriptors travel with the spec, in the order kbuild-sandbox/main.c reads them.
        var passed = [report.write, status.write]
        var flags: UInt32 = spec.dieWithCaller ? 1 : 0
        var logCap: UInt64 = 0
        if case .fd(let fd) = spec.stdin { passed.append(fd); flags |= 2 }
        if spec.stdinIsOwnTerminal { flags |= 32 }
        for (output, pipe, bit) in [(spec.stdout, stdoutPipe, UInt32(4)), (spec.stderr, stderrPipe, UInt32(8))] {
            switch output {
            case .discard: break
            case .fd(let fd): passed.append(fd); flags |= bit
            case .lines(let fd, let cap): passed.append(fd); flags |= bit | 16; logCap = cap
            case .pipe: passed.append(pipe!.write); flags |= bit
            }
        }
        if netnsFD >= 0 { passed.append(netnsFD) }
        if upperFD >= 0 { passed.append(upperFD) }
        passed += lowerFDs + mountFDs
        let wire = SandboxWire.encode(spec, flags: flags, idMap: idMap, cgroupProcs: joinInHelper, mountIsDir: mountIsDir, openFiles: Launch.openFilesLimit(spec.limits.openFiles), logCap: logCap, hasUpper: upperFD >= 0, hasNetns: netnsFD >= 0)
        // From here on, a timeout or a cancel can kill the helper, even while it is still starting the sandbox.
        let pidfd = kb_sb_pidfd_open(helper.pid)
        guard pidfd >= 0 else { return abandon("failed to watch the sandbox helper: pidfd_open: \(String(cString: strerror(errno)))") }
        fds.append(pidfd)
        if control.publish(pidfd) { kb_sb_signal(pidfd, SIGKILL) }
        let deadline = spec.limits.timeout.map { started + $0 }
        var timedOut = false
        let sent = wire.withUnsafeBytes { kb_sb_send(helper.socket, $0.baseAddress, $0.count, passed, Int32(passed.count)) }
        // The helper has its own copies now; ours go, so that EOF means EOF.
        for fd in lowerFDs + mountFDs + [upperFD, netnsFD, report.write, status.write] { closeNow(fd) }
        if let p = stdoutPipe { closeNow(p.write) }
        if let p = stderrPipe { closeNow(p.write) }
        guard sent == 0 else {
            let why = errno == EMSGSIZE ? "the spec (\(wire.count) bytes) is too large" : String(cString: strerror(errno))
            return abandon("failed to start the sandbox: send the spec to the helper: \(why)")
        }

        // The report, unless the deadline passes or the task is cancelled first.
        while true {
            var polls = [pollfd(fd: report.read, events: Int16(POLLIN), revents: 0), pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)]
            let left = deadline.map { $0 - .now }
            if let left, left <= .zero {
                timedOut = true
                break
            }
            let n = poll(&polls, 2, left.map(Launch.milliseconds) ?? -1)
            if n < 0 && errno == EINTR { continue }
            if n != 0 { break }
        }
        if timedOut || control.cancelled {
            finish(helper, kill: true)
            _ = control.publish(-1)
            return .success(.left(SandboxResult(termination: timedOut ? .timedOut : .cancelled, peakMemory: nil)))
        }
        var answer = kb_sb_report()
        let got = withUnsafeMutableBytes(of: &answer) { readAll(report.read, $0) }
        closeNow(report.read)
        guard got == MemoryLayout<kb_sb_report>.size, answer.err == 0 else {
            if got == MemoryLayout<kb_sb_report>.size {
                finish(helper, kill: false)  // it exits after a failed start
                // The helper's text already ends in the reason (strerror) where there is one.
                let message = withUnsafeBytes(of: answer.what) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                let code: KbuildError.Code = answer.err == ENOENT && message.contains("command not found") ? .notFound : .io
                return .failure(KbuildError(code, "failed to start the sandbox: \(message)"))
            }
            return abandon("failed to start the sandbox: the helper \(helperPath) exited without a report")
        }
        return .success(.right(Begun(helper: helper, pidfd: pidfd, status: status.read, pid: answer.pid,
                                     started: started, reported: .now, oomBefore: oomBefore)))
    }

    /// Streams the output of a begun sandbox until it is over, and tells how it ended.
    private func watch(_ begun: Begun, control: Control, output: @Sendable (SandboxStream, [UInt8]) -> Void) -> SandboxResult {
        let (helper, pidfd, statusFD, started, reported, oomBefore) = (begun.helper, begun.pidfd, begun.status, begun.started, begun.reported, begun.oomBefore)
        let deadline = spec.limits.timeout.map { started + $0 }
        var timedOut = false

        // The sandbox is over when the helper closes the status pipe (after the
        // command's end, if it saw one), or when the helper itself dies.
        var ended = false
        var endedAt = ContinuousClock.now
        var statusBytes: [UInt8] = []
        var open: [(fd: Int32, stream: SandboxStream)] = []
        if let p = stdoutPipe { open.append((p.read, .stdout)) }
        if let p = stderrPipe { open.append((p.read, .stderr)) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !ended || !open.isEmpty {
            let wasEnded = ended
            var polls = [pollfd(fd: ended ? -1 : statusFD, events: Int16(POLLIN), revents: 0),
                         pollfd(fd: ended ? -1 : pidfd, events: Int16(POLLIN), revents: 0)]
            polls += open.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            var wait: Int32 = -1
            if ended {
                // Everything in the namespace dies with its PID 1; output left in flight gets a bounded wait.
                let left = endedAt + .seconds(2) - .now
                if left <= .zero { break }
                wait = Launch.milliseconds(left)
            } else if let deadline, !timedOut {
                let left = deadline - .now
                wait = left <= .zero ? 0 : Launch.milliseconds(left)
            }
            let n = poll(&polls, nfds_t(polls.count), wait)
            if n < 0 && errno != EINTR { break }
            if let deadline, !ended, !timedOut, ContinuousClock.now >= deadline {
                timedOut = true
                kb_sb_signal(pidfd, SIGKILL)
                cgroup?.killAll()
            }
            if !ended && polls[0].revents != 0 {
                let got = buffer.withUnsafeMutableBytes { read(statusFD, $0.baseAddress, $0.count) }
                if got > 0 { statusBytes += buffer[0..<got] } else if got == 0 || errno != EINTR { ended = true }
            }
            if !ended && polls[1].revents != 0 {
                // The helper died (killed): whatever it wrote is in the pipe.
                let got = buffer.withUnsafeMutableBytes { read(statusFD, $0.baseAddress, $0.count) }
                if got > 0 { statusBytes += buffer[0..<got] }
                ended = true
            }
            if ended && !wasEnded { endedAt = .now }
            var still: [(fd: Int32, stream: SandboxStream)] = []
            for (i, o) in open.enumerated() {
                guard polls[i + 2].revents != 0 else { still.append(o); continue }
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
        _ = control.publish(-1)
        let cancelled = control.cancelled
        var outcome: (kind: Int32, code: Int32)?
        if statusBytes.count == MemoryLayout<kb_sb_status>.size {
            statusBytes.withUnsafeBytes { outcome = ($0.loadUnaligned(fromByteOffset: 0, as: Int32.self), $0.loadUnaligned(fromByteOffset: 4, as: Int32.self)) }
        }
        let oom = (cgroup?.oomKills() ?? 0) > oomBefore
        let peak = cgroup?.peakMemory(reused: warm != nil)
        // A warm helper that saw its sandbox through runs the next one; any other goes.
        var watch = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        let alive = poll(&watch, 1, 0) == 0
        if warm != nil, let pool, alive, !timedOut, !cancelled {
            pool.giveBack(helper)
        } else {
            finish(helper, kill: alive)
        }
        let termination = SandboxResult.Termination.decide(status: outcome, timedOut: timedOut, cancelled: cancelled, oomKilled: oom)
        if Sandbox.timing {
            FileHandle.standardError.write(Data("sandbox timing: \(warm == nil ? "cold" : "warm") start \(reported - started), run \(ContinuousClock.now - reported)\n".utf8))
        }
        return SandboxResult(termination: termination, peakMemory: peak)
    }

    private static func milliseconds(_ d: Duration) -> Int32 {
        Int32(min(d.components.seconds, 86_400) * 1000 + d.components.attoseconds / 1_000_000_000_000_000) + 1
    }

    /// Raising a hard limit needs CAP_SYS_RESOURCE in the host's namespace: never above ours.
    static func openFilesLimit(_ wanted: UInt64) -> UInt64 {
        var own = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &own)
        return min(wanted, UInt64(own.rlim_max))
    }
}

extension SandboxResult.Termination {
    /// How it ended, from what was seen: PID 1's report of the command
    /// (kind 1 exited, 2 signaled), or nil when PID 1 itself was killed.
    static func decide(status: (kind: Int32, code: Int32)?, timedOut: Bool, cancelled: Bool, oomKilled: Bool) -> Self {
        if timedOut { return .timedOut }
        if cancelled { return .cancelled }
        let killed = status.map { $0.kind == 2 && $0.code == SIGKILL } ?? true
        if oomKilled && killed { return .outOfMemory }
        guard let status else { return .signaled(SIGKILL) }
        return status.kind == 2 ? .signaled(status.code) : .exited(status.code)
    }
}
