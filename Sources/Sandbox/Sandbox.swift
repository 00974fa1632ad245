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
    /// The helper executable that starts and watches each sandbox (`kbuild-sandbox`).
    public let helper: String
    /// A user namespace with the sandboxes' id map, held open: lower dirs and
    /// bind mounts are idmapped through it, so host root's files are root's inside.
    private let idmapNamespace: Int32
    private let counter = Atomic<UInt64>(0)
    private let pool: HelperPool?

    /// `warmHelpers`: how many helpers of each kind (for the host's network,
    /// and with a loopback-only namespace made ahead) to keep started and
    /// already inside a cgroup of their own, so that a start pays neither for
    /// the exec, nor the cgroup move, nor the namespace (long-lived services:
    /// build workers, node agents). 0 for a one-off run. Cgroups left by
    /// kbuild processes that died are swept here.
    public init(ids: IDRange = .default, cgroups: CgroupLayout? = CgroupLayout.detect(), helper: String? = nil,
                warmHelpers: Int = 0) throws {
        self.ids = ids
        self.cgroups = cgroups
        self.helper = try helper ?? Sandbox.findHelper()
        var err = [CChar](repeating: 0, count: 512)
        let map = ids.map
        let fd = kb_sb_userns(map, map, &err, err.count)
        guard fd >= 0 else { throw KbuildError(.io, "failed to create the sandboxes' user namespace: \(cString(err))") }
        idmapNamespace = fd
        cgroups?.sweepOrphans()
        pool = warmHelpers > 0 ? HelperPool(size: warmHelpers, helper: self.helper, layout: cgroups) : nil
    }

    deinit {
        pool?.stop()
        close(idmapNamespace)
    }

    /// `$KBUILD_SANDBOX_HELPER`, else `kbuild-sandbox` beside the binary this code is in
    /// (the kbuild executable, or the test bundle in `.build/debug`).
    static func findHelper() throws -> String {
        if let path = ProcessInfo.processInfo.environment["KBUILD_SANDBOX_HELPER"], !path.isEmpty { return path }
        var candidates: [String] = []
        var own = [CChar](repeating: 0, count: 4096)
        if kb_sb_own_dir(&own, own.count) == 0 { candidates.append(cString(own)) }
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.append((exe as NSString).deletingLastPathComponent)
        }
        for dir in candidates {
            let path = dir + "/kbuild-sandbox"
            if access(path, X_OK) == 0 { return path }
        }
        throw KbuildError(.notFound, "failed to find the sandbox helper kbuild-sandbox beside \(candidates.first ?? "kbuild") (set KBUILD_SANDBOX_HELPER)")
    }

    /// `KBUILD_SANDBOX_TIMING=1`: each run's phases on stderr (for profiling).
    static let timing = ProcessInfo.processInfo.environment["KBUILD_SANDBOX_TIMING"] == "1"

    /// Runs `spec` to the end. Output sent to `.pipe` arrives at `output` as it
    /// is written (on a thread of the sandbox's own). Cancelling the task kills
    /// the sandbox. Throws when the sandbox cannot start (a clear message naming
    /// the step and the object); a command that starts and fails is a result.
    public func run(_ spec: SandboxSpec,
                    output: @escaping @Sendable (SandboxStream, [UInt8]) -> Void = { _, _ in }) async throws -> SandboxResult {
        try spec.validate()
        let t0 = ContinuousClock.now
        let id = "sb-\(getpid())-\(counter.add(1, ordering: .relaxed).newValue)-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        // A warm helper already sits in a cgroup of its own: only the limits are written now.
        let warm = pool?.take(for: spec.network)
        var cgroup = warm?.cgroup
        var joinInHelper: [String] = []
        let launch: Launch
        do {
            if let cgroup {
                // The warm helper's own cgroup, used again: every limit is written, given or
                // not; the helper itself counts as one process there.
                var limits = spec.limits
                limits.pids = limits.pids.map { $0 + 1 }
                try cgroup.apply(limits, reset: true)
                cgroup.resetPeak()
            } else if spec.limits.needsCgroup {
                guard let cgroups else {
                    throw KbuildError(.invalidArgument, "failed to limit the sandbox: no cgroup hierarchy (v1 or v2) under /sys/fs/cgroup")
                }
                cgroup = try Cgroup.create(id: id, limits: spec.limits, layout: cgroups)
                joinInHelper = cgroup?.procsFiles ?? []
            }
            launch = try Launch(spec: spec, cgroup: cgroup, joinInHelper: joinInHelper, helper: warm, pool: pool, sandbox: self)
        } catch {
            // Nothing reached the helper: a warm one stays ready for the next start.
            if let warm { pool?.putBack(warm) } else { try? cgroup?.remove() }
            throw error
        }
        let t1 = ContinuousClock.now
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
        let t2 = ContinuousClock.now
        launch.closeAll()
        var cleanup: KbuildError?
        // A warm helper's cgroup stays with it; one made for this start goes now.
        if warm == nil {
            do { try cgroup?.remove() } catch { cleanup = KbuildError.wrap(error) }
        }
        if Sandbox.timing { FileHandle.standardError.write(Data("sandbox timing: prepare \(t1 - t0), run \(t2 - t1), cleanup \(ContinuousClock.now - t2)\n".utf8)) }
        let outcome = try result.get()
        if let cleanup { throw cleanup }
        return outcome
    }

    /// Starts `spec` and returns once its command runs, leaving it to its own
    /// helper: an app process that outlives this kbuild (see `SandboxProcess`).
    /// Its output must go to descriptors (log files), not to pipes of ours.
    public func start(_ spec: SandboxSpec) async throws -> SandboxProcess {
        guard !spec.dieWithCaller else {
            throw KbuildError(.invalidArgument, "failed to start a lasting sandbox: its spec says it dies with its caller")
        }
        guard spec.stdout != .pipe, spec.stderr != .pipe, spec.limits.timeout == nil else {
            throw KbuildError(.invalidArgument, "failed to start a lasting sandbox: its output must go to files, and it takes no timeout")
        }
        try spec.validate()
        let id = "sb-\(getpid())-\(counter.add(1, ordering: .relaxed).newValue)-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        var cgroup: Cgroup?
        let launch: Launch
        do {
            if spec.limits.needsCgroup {
                guard let cgroups else {
                    throw KbuildError(.invalidArgument, "failed to limit the sandbox: no cgroup hierarchy (v1 or v2) under /sys/fs/cgroup")
                }
                cgroup = try Cgroup.create(id: id, limits: spec.limits, layout: cgroups)
            }
            launch = try Launch(spec: spec, cgroup: cgroup, joinInHelper: cgroup?.procsFiles ?? [], helper: nil, pool: nil, sandbox: self)
        } catch {
            try? cgroup?.remove()
            throw error
        }
        let result = await withCheckedContinuation { continuation in
            let thread = Thread { continuation.resume(returning: launch.start(control: Control())) }
            thread.name = "kbuild-sandbox-start"
            thread.start()
        }
        launch.closeAll()
        switch result {
        case .failure(let error):
            try? cgroup?.remove()
            throw error
        case .success(let begun):
            return SandboxProcess(helperPID: begun.helper.pid, pid: begun.pid,
                                  startTime: SandboxProcess.startTime(of: begun.helper.pid) ?? 0,
                                  cgroupDirectories: cgroup?.directories.map(\.path) ?? [],
                                  pidfd: begun.pidfd, statusFD: begun.status, isChild: true)
        }
    }

    func detach(_ path: String, idmap: Bool, readOnly: Bool, what: String) throws -> Int32 {
        var err = [CChar](repeating: 0, count: 600)
        let fd = kb_sb_detach(path, idmap ? idmapNamespace : -1, readOnly ? 1 : 0, &err, err.count)
        guard fd >= 0 else {
            let code: KbuildError.Code = errno == ENOENT ? .notFound : errno == EINVAL ? .invalidArgument : .io
            let hint = errno == EINVAL && idmap ? " (its filesystem cannot be idmapped, so the sandbox cannot use it: put it on ext4, xfs, btrfs or tmpfs)" : ""
            throw KbuildError(code, "failed to mount \(what) \(path) in the sandbox: \(cString(err))\(hint)")
        }
        return fd
    }
}
