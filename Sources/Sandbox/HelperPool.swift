import KbuildCore
import CSandbox
import Foundation
import Synchronization

/// A helper process started and waiting for its spec on its control socket.
struct ReadyHelper: Sendable {
    var pid: pid_t
    /// kbuild's end of the control socket.
    var socket: Int32
    /// The cgroup it sits in (every controller) when it is a warm one: it runs
    /// sandbox after sandbox there, and the cgroup goes when the helper does.
    var cgroup: Cgroup?
    /// Which network it is ready for: 0 the host's (or a named one), 1 a new one it made ahead.
    var kind = 0

    /// Whether the helper said it is ready for another sandbox (non-blocking).
    /// False if it has not yet, or if it is gone.
    func isReady() -> Bool {
        var p = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 0) == 1 else { return false }
        var byte: UInt8 = 0
        return recv(socket, &byte, 1, Int32(MSG_DONTWAIT)) == 1 && byte == UInt8(ascii: "r")
    }

    /// posix_spawn of the helper: fd 3 is its control socket, 0 to 2 are /dev/null.
    /// `ahead`: it also makes a loopback-only network namespace before it waits.
    static func spawn(_ helper: String, ahead: Bool = false) throws -> ReadyHelper {
        var pair: [Int32] = [-1, -1]
        guard kb_sb_socketpair(&pair) == 0 else { throw KbuildError.syscall("socketpair", "", verb: "start the sandbox helper") }
        defer { close(pair[1]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pair[1], 3)
        for fd: Int32 in 0...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
        kb_sb_spawn_closefrom(&actions, 4)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        // A session of its own: a terminal's ^C or hangup is kbuild's to handle, not every helper's.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) | kb_sb_spawn_setsid_flag())
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("kbuild-sandbox"), ahead ? strdup("--ahead") : nil, nil]
        defer { argv.forEach { free($0) } }
        let envp: [UnsafeMutablePointer<CChar>?] = [nil]
        // Room for a large spec in one message (the helper reads up to 1 MiB).
        var buffer: Int32 = 2 << 20
        setsockopt(pair[0], SOL_SOCKET, SO_SNDBUFFORCE, &buffer, socklen_t(MemoryLayout<Int32>.size))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, helper, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            close(pair[0])
            throw KbuildError.syscall("posix_spawn", helper, errno: rc, verb: "start the sandbox helper")
        }
        return ReadyHelper(pid: pid, socket: pair[0], cgroup: nil)
    }

    /// Sends it away unused: EOF on its socket makes it exit; then reap it and drop its cgroup.
    func discard() {
        close(socket)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        try? cgroup?.remove()
    }
}

/// Warm helpers: started ahead of time, each inside a cgroup of its own, the
/// ones for loopback-only sandboxes with their network namespace made. A warm
/// helper runs one sandbox after another in its cgroup, so a start pays
/// neither the exec, nor the cgroup move, nor the namespace. One thread of the
/// pool's own starts new ones when the pool runs low.
final class HelperPool: Sendable {
    private struct State {
        /// By kind (0: the host's or a named network, 1: a new one made ahead): waiting for a sandbox.
        var ready: [[ReadyHelper]] = [[], []]
        /// Given back after a sandbox, until they say they are ready again.
        var settling: [[ReadyHelper]] = [[], []]
        var stopping = false
        var counter = 0
    }
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    let size: Int
    let helper: String
    let layout: CgroupLayout?

    init(size: Int, helper: String, layout: CgroupLayout?) {
        self.size = size
        self.helper = helper
        self.layout = layout
        let thread = Thread { [self] in refill() }
        thread.name = "kbuild-sandbox-pool"
        thread.start()
    }

    /// A warm helper for this network, if one is ready.
    func take(for network: SandboxNetwork) -> ReadyHelper? {
        let kind = network == .none ? 1 : 0
        var gone: [ReadyHelper] = []
        let taken = state.withLock { s -> ReadyHelper? in
            // Those that settled since they were given back are ready now.
            s.settling[kind].removeAll { h in
                if h.isReady() { s.ready[kind].append(h); return true }
                var p = pollfd(fd: h.socket, events: Int16(POLLIN), revents: 0)
                if poll(&p, 1, 0) == 1 && p.revents & Int16(POLLHUP) != 0 { gone.append(h); return true }
                return false
            }
            // One that exited while it waited (it could not make its namespace) is no use.
            while let h = s.ready[kind].popLast() {
                var p = pollfd(fd: h.socket, events: 0, revents: 0)
                if poll(&p, 1, 0) == 1 && p.revents & Int16(POLLHUP) != 0 { gone.append(h); continue }
                return h
            }
            return nil
        }
        for h in gone { h.discard() }
        wake.signal()
        return taken
    }

    /// A helper whose sandbox is over and that may run another: kept unless the
    /// pool already holds twice its size of that kind (it refilled while this one
    /// was busy; a busy helper may stay busy for days, an app's).
    func giveBack(_ helper: ReadyHelper) {
        let kept = state.withLock { s -> Bool in
            guard !s.stopping, s.ready[helper.kind].count + s.settling[helper.kind].count < 2 * size else { return false }
            s.settling[helper.kind].append(helper)
            return true
        }
        if !kept { helper.discard() }
    }

    /// A helper taken but never sent a spec: ready as it was.
    func putBack(_ helper: ReadyHelper) {
        let kept = state.withLock { s -> Bool in
            guard !s.stopping else { return false }
            s.ready[helper.kind].append(helper)
            return true
        }
        if !kept { helper.discard() }
    }

    /// Stops refilling and sends every waiting helper away.
    func stop() {
        let waiting = state.withLock { s -> [ReadyHelper] in
            s.stopping = true
            defer { s.ready = [[], []]; s.settling = [[], []] }
            return (s.ready + s.settling).flatMap { $0 }
        }
        wake.signal()
        stopped.wait()
        for h in waiting { h.discard() }
    }

    private func refill() {
        while true {
            let (stop, kind, n) = state.withLock { s -> (Bool, Int?, Int) in
                let low = [0, 1].first { s.ready[$0].count + s.settling[$0].count < size }
                return (s.stopping, low, s.counter)
            }
            if stop { break }
            guard let kind else { wake.wait(); continue }
            state.withLock { $0.counter += 1 }
            do {
                var ready = try ReadyHelper.spawn(helper, ahead: kind == 1)
                ready.kind = kind
                if let layout {
                    do {
                        let cgroup = try Cgroup.create(id: "sb-\(getpid())-w\(n)-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))", limits: nil, layout: layout)
                        ready.cgroup = cgroup
                        try cgroup.join(ready.pid)
                    } catch {
                        ready.discard()
                        throw error
                    }
                }
                let kept = state.withLock { s -> Bool in
                    guard !s.stopping else { return false }
                    s.ready[kind].append(ready)
                    return true
                }
                if !kept { ready.discard() }
            } catch {
                // A pool that cannot fill leaves starts on the cold path; try again at the next take.
                wake.wait()
            }
        }
        stopped.signal()
    }
}
