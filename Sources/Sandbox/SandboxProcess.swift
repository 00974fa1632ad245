import KbuildCore
import CSandbox
import Foundation

/// A sandbox left running by `Sandbox.start`: an app process, watched by its
/// own helper (`kbuild-sandbox`, the per-process monitor), so it outlives the
/// kbuild that started it. Signals sent to the helper reach the command; when
/// the helper dies, the whole sandbox does.
///
/// Lifecycle: `start` → running → `wait()` returns when it is over. A kbuild
/// that restarts finds its processes again with `adopt` (by the helper's PID
/// and start time, which tell it apart from a recycled PID).
public final class SandboxProcess: Sendable {
    /// The monitor's host PID: stop the process by signalling it.
    public let helperPID: Int32
    /// PID 1 of the sandbox, as the host sees it.
    public let pid: Int32
    /// The helper's start time (clock ticks since boot, /proc/PID/stat field 22).
    public let startTime: UInt64
    /// The cgroup directories the sandbox runs in (removed once it is over).
    public let cgroupDirectories: [String]
    private let pidfd: Int32
    /// The helper's report of how the command ended; only for a process this kbuild started.
    private let statusFD: Int32
    private let isChild: Bool

    init(helperPID: Int32, pid: Int32, startTime: UInt64, cgroupDirectories: [String], pidfd: Int32, statusFD: Int32, isChild: Bool) {
        self.helperPID = helperPID
        self.pid = pid
        self.startTime = startTime
        self.cgroupDirectories = cgroupDirectories
        self.pidfd = pidfd
        self.statusFD = statusFD
        self.isChild = isChild
    }

    deinit {
        close(pidfd)
        if statusFD >= 0 { close(statusFD) }
    }

    /// Sets the CPU limit of a running sandbox (nil: none), in whichever of
    /// its cgroup directories holds the CPU controller (v1 or v2).
    public func setCPULimit(_ cpus: Double?) throws {
        let quota = cpus.map { max(1000, Int(($0 * 100_000).rounded())) }
        var set = false
        for dir in cgroupDirectories {
            if FileManager.default.fileExists(atPath: dir + "/cpu.max") {
                try Cgroup.writeControl(dir + "/cpu.max", quota.map { "\($0) 100000" } ?? "max 100000", verb: "set the CPU limit")
                set = true
            } else if FileManager.default.fileExists(atPath: dir + "/cpu.cfs_quota_us") {
                try Cgroup.writeControl(dir + "/cpu.cfs_quota_us", quota.map(String.init) ?? "-1", verb: "set the CPU limit")
                set = true
            }
        }
        guard set else {
            throw KbuildError(.notFound, "failed to set the CPU limit of pid \(pid): none of its cgroups (\(cgroupDirectories.joined(separator: ", "))) has the CPU controller")
        }
    }

    /// A process started by an earlier kbuild, if it still runs: nil when the PID
    /// is gone or belongs to another process now.
    public static func adopt(helperPID: Int32, pid: Int32, startTime: UInt64, cgroupDirectories: [String]) -> SandboxProcess? {
        let fd = kb_sb_pidfd_open(helperPID)
        guard fd >= 0 else { return nil }
        // The PID could have been reused between the record and the pidfd: the start time says.
        guard SandboxProcess.startTime(of: helperPID) == startTime else {
            close(fd)
            return nil
        }
        return SandboxProcess(helperPID: helperPID, pid: pid, startTime: startTime, cgroupDirectories: cgroupDirectories,
                              pidfd: fd, statusFD: -1, isChild: false)
    }

    /// Field 22 of /proc/PID/stat, nil if there is no such process.
    public static func startTime(of pid: Int32) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // After "pid (comm)" come fields 3…; the start time is field 22.
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// Sends `signal` to the command (through its helper).
    public func signal(_ signal: Int32) {
        kb_sb_signal(pidfd, signal)
    }

    /// Kills the whole sandbox now.
    public func kill() { signal(SIGKILL) }

    public var isRunning: Bool {
        var p = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 0
    }

    /// Waits until the sandbox is over. The exit status as a shell shows it
    /// (128 + signal), when known: nil for an adopted process, whose end its
    /// old parent would have been told.
    public func wait() async -> Int32? {
        await withCheckedContinuation { continuation in
            let thread = Thread {
                continuation.resume(returning: self.waitBlocking())
            }
            thread.name = "kbuild-process"
            thread.start()
        }
    }

    private func waitBlocking() -> Int32? {
        var p = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        while poll(&p, 1, -1) < 0 && errno == EINTR {}
        var status: Int32?
        if statusFD >= 0 {
            var st = kb_sb_status()
            let got = withUnsafeMutableBytes(of: &st) { read(statusFD, $0.baseAddress, $0.count) }
            if got == MemoryLayout<kb_sb_status>.size {
                status = st.kind == 1 ? st.code : 128 + st.code
            } else {
                status = 137  // PID 1 was killed: the command with it
            }
        }
        if isChild {
            var st: Int32 = 0
            while waitpid(helperPID, &st, 0) < 0 && errno == EINTR {}
        }
        for dir in cgroupDirectories.reversed() {
            // The last processes of a cgroup leave it a moment after their parent saw them go.
            for _ in 0..<50 where rmdir(dir) != 0 && errno == EBUSY { usleep(2000) }
        }
        return status
    }
}
