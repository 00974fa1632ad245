import KbuildCore
import Foundation

/// Where this host keeps its cgroups, and where kbuild makes its own beside
/// them: one `kbuild` directory per hierarchy, one cgroup per sandbox under it.
///
/// cgroup v2 (unified, most hosts): `/sys/fs/cgroup/kbuild/<id>`, with the
/// memory, pids and cpu controllers enabled for kbuild's subtree.
/// cgroup v1 (and hybrid hosts): `/sys/fs/cgroup/<controller>/kbuild/<id>` for
/// each controller a sandbox's limits need.
public struct CgroupLayout: Sendable, Equatable {
    public enum Version: String, Sendable { case v1, v2 }

    public var version: Version
    /// The mount of the v2 hierarchy, or the directory holding v1 controller mounts.
    public var base: String
    public var parent: String

    public init(version: Version, base: String, parent: String = "kbuild") {
        self.version = version
        self.base = base
        self.parent = parent
    }

    /// What the host has: a v2 hierarchy with controllers at `base`, else v1 controllers under it.
    public static func detect(base: String = "/sys/fs/cgroup") -> CgroupLayout? {
        if FileManager.default.fileExists(atPath: base + "/cgroup.controllers") {
            return CgroupLayout(version: .v2, base: base)
        }
        if FileManager.default.fileExists(atPath: base + "/memory/memory.limit_in_bytes") {
            return CgroupLayout(version: .v1, base: base)
        }
        return nil
    }

    /// The directories one sandbox's cgroup is made of, for these limits
    /// (nil: every controller, for a helper made ready before its limits are known).
    func directories(for id: String, limits: SandboxLimits?) -> [(controller: String?, path: String)] {
        switch version {
        case .v2:
            return [(nil, "\(base)/\(parent)/\(id)")]
        case .v1:
            var out: [(String?, String)] = []
            if limits == nil || limits?.memory != nil { out.append(("memory", "\(base)/memory/\(parent)/\(id)")) }
            if limits == nil || limits?.pids != nil { out.append(("pids", "\(base)/pids/\(parent)/\(id)")) }
            if limits == nil || limits?.cpus != nil { out.append(("cpu", "\(base)/cpu/\(parent)/\(id)")) }
            return out
        }
    }

    /// Removes sandbox cgroups (`sb-<pid>-…`) whose kbuild process is gone (it was
    /// killed before it could clean up). Only empty ones go: rmdir refuses others.
    public func sweepOrphans() {
        let parents = version == .v2 ? ["\(base)/\(parent)"] : ["memory", "pids", "cpu"].map { "\(base)/\($0)/\(parent)" }
        for dir in parents {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix("sb-") {
                guard let owner = name.split(separator: "-").dropFirst().first.flatMap({ pid_t($0) }), kill(owner, 0) != 0, errno == ESRCH else { continue }
                rmdir(dir + "/" + name)
            }
        }
    }

    /// The files a sandbox's limits are written to, in order: a pure function of the limits.
    /// `reset`: also put every limit not given back to none (a cgroup used again).
    static func settings(_ limits: SandboxLimits, version: Version, hasSwapAccounting: Bool,
                         reset: Bool = false) -> [(controller: String?, file: String, value: String)] {
        var out: [(String?, String, String)] = []
        let quota = limits.cpus.map { String(max(1000, Int(($0 * 100_000).rounded()))) }
        switch version {
        case .v2:
            if let memory = limits.memory {
                out.append((nil, "memory.max", String(memory)))
                out.append((nil, "memory.swap.max", "0"))
            } else if reset {
                out.append((nil, "memory.max", "max"))
                out.append((nil, "memory.swap.max", "max"))
            }
            if let pids = limits.pids { out.append((nil, "pids.max", String(pids))) } else if reset { out.append((nil, "pids.max", "max")) }
            if let quota { out.append((nil, "cpu.max", "\(quota) 100000")) } else if reset { out.append((nil, "cpu.max", "max 100000")) }
        case .v1:
            // memory.limit_in_bytes may never exceed memory.memsw.limit_in_bytes: lift the second first.
            if let memory = limits.memory {
                if hasSwapAccounting && reset { out.append(("memory", "memory.memsw.limit_in_bytes", "-1")) }
                out.append(("memory", "memory.limit_in_bytes", String(memory)))
                if hasSwapAccounting { out.append(("memory", "memory.memsw.limit_in_bytes", String(memory))) }
            } else if reset {
                if hasSwapAccounting { out.append(("memory", "memory.memsw.limit_in_bytes", "-1")) }
                out.append(("memory", "memory.limit_in_bytes", "-1"))
            }
            if let pids = limits.pids { out.append(("pids", "pids.max", String(pids))) } else if reset { out.append(("pids", "pids.max", "max")) }
            if let quota {
                out.append(("cpu", "cpu.cfs_period_us", "100000"))
                out.append(("cpu", "cpu.cfs_quota_us", quota))
            } else if reset {
                out.append(("cpu", "cpu.cfs_quota_us", "-1"))
            }
        }
        return out
    }
}

/// One sandbox's cgroup (a directory per v1 controller, or one v2 directory).
final class Cgroup: Sendable {
    let layout: CgroupLayout
    let directories: [(controller: String?, path: String)]

    private init(layout: CgroupLayout, directories: [(controller: String?, path: String)]) {
        self.layout = layout
        self.directories = directories
    }

    /// Makes the cgroup and writes its limits (none yet when `limits` is nil);
    /// on any failure removes what it made.
    static func create(id: String, limits: SandboxLimits?, layout: CgroupLayout) throws -> Cgroup {
        let dirs = layout.directories(for: id, limits: limits)
        var made: [String] = []
        let cgroup = Cgroup(layout: layout, directories: dirs)
        do {
            if layout.version == .v2 { try prepareV2Parent(layout) }
            for (controller, path) in dirs {
                let parent = (path as NSString).deletingLastPathComponent
                if mkdir(parent, 0o755) != 0 && errno != EEXIST {
                    throw KbuildError.syscall("mkdir", parent, verb: "create the sandbox's \(controller ?? "v2") cgroup")
                }
                guard mkdir(path, 0o755) == 0 else {
                    throw KbuildError.syscall("mkdir", path, verb: "create the sandbox's \(controller ?? "v2") cgroup")
                }
                made.append(path)
            }
            if let limits { try cgroup.apply(limits) }
        } catch {
            for path in made.reversed() { rmdir(path) }
            throw error
        }
        return cgroup
    }

    /// Writes the limits into the cgroup's control files (`reset`: also lift the ones not given).
    func apply(_ limits: SandboxLimits, reset: Bool = false) throws {
        let swap = layout.version == .v1 && FileManager.default.fileExists(atPath: "\(layout.base)/memory/memory.memsw.limit_in_bytes")
        for (controller, file, value) in CgroupLayout.settings(limits, version: layout.version, hasSwapAccounting: swap, reset: reset) {
            guard let dir = directories.first(where: { $0.controller == controller })?.path else { continue }
            try Cgroup.writeControl(dir + "/" + file, value, verb: "set the sandbox's limit")
        }
    }

    /// Moves a process in (on v1 this can wait out an RCU grace period: keep it off hot paths).
    func join(_ pid: pid_t) throws {
        for file in procsFiles { try Cgroup.writeControl(file, String(pid), verb: "move the sandbox helper into its cgroup") }
    }

    private static func prepareV2Parent(_ layout: CgroupLayout) throws {
        let parent = "\(layout.base)/\(layout.parent)"
        if mkdir(parent, 0o755) != 0 && errno != EEXIST {
            throw KbuildError.syscall("mkdir", parent, verb: "create kbuild's cgroup")
        }
        let wanted = ["memory", "pids", "cpu"]
        let enabled = (try? String(contentsOfFile: parent + "/cgroup.subtree_control", encoding: .utf8))?.split(whereSeparator: \.isWhitespace).map(String.init) ?? []
        let missing = wanted.filter { !enabled.contains($0) }
        guard !missing.isEmpty else { return }
        let line = missing.map { "+" + $0 }.joined(separator: " ")
        // The root must delegate them first; a host that already does is fine.
        try? writeControl(layout.base + "/cgroup.subtree_control", line, verb: "enable cgroup controllers")
        try writeControl(parent + "/cgroup.subtree_control", line, verb: "enable the \(missing.joined(separator: ", ")) cgroup controllers for kbuild")
    }

    static func writeControl(_ path: String, _ value: String, verb: String) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw KbuildError.syscall("open", path, verb: verb) }
        defer { close(fd) }
        let n = value.withCString { write(fd, $0, strlen($0)) }
        guard n >= 0 else { throw KbuildError.syscall("write \(value)", path, verb: verb) }
    }

    /// The files the child's PID is written to before it runs.
    var procsFiles: [String] { directories.map { $0.path + "/cgroup.procs" } }

    private var memoryDir: String? {
        directories.first(where: { $0.controller == "memory" || (layout.version == .v2 && $0.controller == nil) })?.path
    }

    /// How many times the OOM killer struck in this cgroup.
    func oomKills() -> UInt64 {
        guard let dir = memoryDir else { return 0 }
        let file = layout.version == .v2 ? "memory.events" : "memory.oom_control"
        guard let text = try? String(contentsOfFile: dir + "/" + file, encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == "oom_kill", let n = UInt64(parts[1]) { return n }
        }
        return 0
    }

    /// Starts the peak-memory count again (v1 only).
    func resetPeak() {
        guard layout.version == .v1, let dir = memoryDir else { return }
        try? Cgroup.writeControl(dir + "/memory.max_usage_in_bytes", "0", verb: "reset the peak memory")
    }

    /// Peak memory since the sandbox started (nil when unknown: a reused v2 cgroup keeps its lifetime peak).
    func peakMemory(reused: Bool = false) -> UInt64? {
        guard let dir = memoryDir, !(reused && layout.version == .v2) else { return nil }
        let file = layout.version == .v2 ? "memory.peak" : "memory.max_usage_in_bytes"
        return (try? String(contentsOfFile: dir + "/" + file, encoding: .utf8)).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Kills every process in the cgroup (cgroup.kill on v2, one by one on v1).
    func killAll() {
        for (_, path) in directories {
            if layout.version == .v2, (try? Cgroup.writeControl(path + "/cgroup.kill", "1", verb: "kill")) != nil { continue }
            for pid in pids(in: path) { kill(pid, SIGKILL) }
        }
    }

    func pids(in path: String) -> [pid_t] {
        ((try? String(contentsOfFile: path + "/cgroup.procs", encoding: .utf8)) ?? "")
            .split(separator: "\n").compactMap { pid_t($0) }
    }

    /// Removes the cgroup once its processes are gone (they die with the
    /// sandbox's PID 1, but the kernel reaps them asynchronously): a bounded wait.
    func remove() throws {
        for (_, path) in directories.reversed() {
            var attempts = 0
            while rmdir(path) != 0 {
                if errno == ENOENT { break }
                attempts += 1
                guard errno == EBUSY, attempts < 400 else {
                    throw KbuildError.syscall("rmdir", path, verb: "remove the sandbox's cgroup")
                }
                if attempts % 20 == 0 { killAll() }
                usleep(5_000)
            }
        }
    }
}
