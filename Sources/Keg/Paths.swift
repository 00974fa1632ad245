import KbuildCore
import Foundation

/// A filesystem path as bytes: names on Linux need not be UTF-8, and a tree
/// must restore the exact bytes it was read from.
struct BytePath: CustomStringConvertible {
    var bytes: [UInt8]

    init(_ string: String) { bytes = Array(string.utf8) }
    init(bytes: [UInt8]) { self.bytes = bytes }

    func appending(_ name: [UInt8]) -> BytePath {
        var b = bytes
        if b.last != 0x2f { b.append(0x2f) }
        b.append(contentsOf: name)
        return BytePath(bytes: b)
    }

    /// Calls `body` with a NUL-terminated copy of the path.
    func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        var c = bytes
        c.append(0)
        return try c.withUnsafeBufferPointer { buf in
            try buf.withMemoryRebound(to: CChar.self) { p in try body(p.baseAddress!) }
        }
    }

    var description: String { String(decoding: bytes, as: UTF8.self) }
}

enum FileType {
    static func name(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: "regular file"
        case S_IFDIR: "directory"
        case S_IFLNK: "symlink"
        case S_IFCHR: "character device"
        case S_IFBLK: "block device"
        case S_IFIFO: "fifo"
        case S_IFSOCK: "socket"
        default: "unknown file type"
        }
    }
}

/// Reads the names in a directory as raw bytes.
func readDirectoryNames(_ path: BytePath) throws -> [[UInt8]] {
    let dir = path.withCString { opendir($0) }
    guard let dir else { throw KbuildError.syscall("opendir", path.description, verb: "put \(path)") }
    return try readNames(dir, path)
}

/// Reads the names in the open directory `fd` (which stays open) as raw bytes.
func readDirectoryNames(fd: Int32, path: BytePath) throws -> [[UInt8]] {
    let copy = dup(fd)
    guard copy >= 0, let dir = fdopendir(copy) else {
        throw KbuildError.syscall("fdopendir", path.description, verb: "put \(path)")
    }
    return try readNames(dir, path)
}

private func readNames(_ dir: OpaquePointer, _ path: BytePath) throws -> [[UInt8]] {
    defer { closedir(dir) }
    var names: [[UInt8]] = []
    while true {
        errno = 0
        guard let entry = readdir(dir) else {
            if errno != 0 { throw KbuildError.syscall("readdir", path.description, verb: "put \(path)") }
            break
        }
        let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix(while: { $0 != 0 })) }
        if name == [0x2e] || name == [0x2e, 0x2e] { continue }
        names.append(name)
    }
    return names
}
