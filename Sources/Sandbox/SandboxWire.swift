import CSandbox
import Foundation

/// The spec as the helper reads it from its control socket (little-endian;
/// strings are a u32 length and bytes), its descriptors attached:
///
///     "KBS3" uid gid net flags(1 die with caller, 2 stdin, 4 stdout, 8 stderr, 16 log lines, 32 stdin a terminal made for the command)
///     upper_tmpfs_bytes:u64 tmp_bytes:u64 log_cap:u64
///     nlower has_upper has_netns nmounts ncgroups nrlimits
///     cwd hostname upper_name uid_map gid_map  argc argv…  envc env…
///     (target is_dir)×nmounts  cgroup.procs×ncgroups  (resource soft:u64 hard:u64)×nrlimits
enum SandboxWire {
    static func encode(_ spec: SandboxSpec, flags: UInt32, idMap: String, cgroupProcs: [String], mountIsDir: [Bool], openFiles: UInt64,
                       logCap: UInt64 = 0, hasUpper: Bool, hasNetns: Bool) -> [UInt8] {
        var out = Array("KBS3".utf8)
        func u32(_ v: UInt32) { out.appendLittleEndian(v) }
        func u64(_ v: UInt64) { out.appendLittleEndian(v) }
        func str(_ s: String) { u32(UInt32(s.utf8.count)); out += s.utf8 }
        let net: UInt32 = switch spec.network {
        case .none: UInt32(KB_SB_NET_NONE)
        case .host: UInt32(KB_SB_NET_HOST)
        case .namespace: UInt32(KB_SB_NET_JOIN)
        }
        u32(spec.user); u32(spec.group); u32(net); u32(flags)
        u64(spec.limits.upperSize); u64(spec.limits.tmpSize); u64(logCap)
        u32(UInt32(spec.lowerDirs.count)); u32(hasUpper ? 1 : 0); u32(hasNetns ? 1 : 0)
        u32(UInt32(spec.mounts.count)); u32(UInt32(cgroupProcs.count)); u32(2)
        str(SandboxSpec.canonical(spec.workingDirectory)); str(spec.hostname); str(spec.upperDir ?? ""); str(idMap); str(idMap)
        u32(UInt32(spec.command.count)); spec.command.forEach(str)
        let env = spec.environment.sorted { $0.key < $1.key }
        u32(UInt32(env.count)); env.forEach { str("\($0.key)=\($0.value)") }
        for (mount, isDir) in zip(spec.mounts, mountIsDir) { str(SandboxSpec.canonical(mount.target)); u32(isDir ? 1 : 0) }
        cgroupProcs.forEach(str)
        u32(UInt32(RLIMIT_NOFILE.rawValue)); u64(openFiles); u64(openFiles)
        u32(UInt32(RLIMIT_CORE.rawValue)); u64(0); u64(0)
        return out
    }
}

extension Array where Element == UInt8 {
    fileprivate mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}

func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
    var at = 0
    while at < bytes.count {
        let n = write(fd, bytes.baseAddress! + at, bytes.count - at)
        if n < 0 { if errno == EINTR { continue }; return false }
        at += n
    }
    return true
}

func readAll(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> Int {
    var at = 0
    while at < buffer.count {
        let n = read(fd, buffer.baseAddress! + at, buffer.count - at)
        if n < 0 { if errno == EINTR { continue }; return at }
        if n == 0 { return at }
        at += n
    }
    return at
}

/// The text of a C error buffer.
func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
