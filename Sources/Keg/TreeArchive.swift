public import KbuildCore
import CKbuild
import Foundation

/// A tree as a tar archive that is the same bytes on every machine (an OCI
/// layer): entries in the tree's sorted order, parents first; every mtime
/// 1980-01-01T00:00:01Z (as Cloud Native Buildpacks use); owner 0:0 with no
/// names; the stored modes (0777 for symlinks); ustar headers, with a pax
/// extended header (`path`, `linkpath`, `size`) only where a field does not
/// fit; two zero blocks at the end.
///
/// The Keg stores such an archive as a recipe, not as bytes (`ObjectKind.treeArchive`):
/// its KID is the SHA-256 of the tar, its payload names the tree, and a
/// reader makes the tar's bytes from the tree's files when asked. So a layer
/// costs one hash over the files instead of a second copy of them.
///
/// Written by hand rather than with libarchive because a reader must find any
/// offset without making the bytes before it: every header's size is known
/// from the tree alone, so `members` maps offsets to headers and file contents.
public struct TreeArchive: Sendable {
    public static let mtime: UInt64 = 315_532_801
    static let block: UInt64 = 512
    static let trailer: UInt64 = 1024
    /// The largest size an 11-digit octal field holds; larger files get a pax `size`.
    static let maxOctalSize: UInt64 = 0o77777777777

    struct Member: Sendable {
        /// The path in the archive (directories end in "/").
        var path: [UInt8]
        var type: Tree.EntryType
        var mode: UInt32
        /// Bytes of content (0 for directories and symlinks).
        var size: UInt64
        /// The file's content (nil for an empty file, a directory or a symlink).
        var kid: KID?
        var target: [UInt8]
        /// Offset of its first header block.
        var start: UInt64 = 0
        var headerSize: UInt64 = 0
        /// For a layout made from a directory's walk: the file's index in the walk.
        var file: Int?

        var dataStart: UInt64 { start + headerSize }
        var end: UInt64 { dataStart + TreeArchive.padded(size) }
    }

    /// The tree it is made from (for a layout made from a directory's walk,
    /// before its tree is known: the KID of no bytes).
    public let tree: KID
    let members: [Member]
    /// The archive's length in bytes.
    public let size: UInt64

    /// The layout of the archive of `tree` (reads its tree objects, no file content).
    public init(tree: KID, keg: Keg) throws {
        try self.init(tree: tree) { try keg.tree($0) }
    }

    /// The layout of the archive of `tree`, its trees read through `lookup`.
    init(tree: KID, lookup: (KID) throws -> Tree) throws {
        var members: [Member] = []
        func walk(_ kid: KID, prefix: [UInt8]) throws {
            for e in try lookup(kid).entries {
                if e.type == .file && e.size > 0 && e.kid == nil {
                    throw KbuildError(.corrupt, "failed to make the archive of \(tree): \(String(decoding: prefix + e.name, as: UTF8.self)) has \(e.size) bytes and no content")
                }
                let path = prefix + e.name + (e.type == .directory ? [UInt8(ascii: "/")] : [])
                members.append(Member(path: path, type: e.type, mode: e.mode, size: e.size, kid: e.size > 0 ? e.kid : nil, target: e.target))
                if e.type == .directory, let sub = e.kid { try walk(sub, prefix: path) }
            }
        }
        try walk(tree, prefix: [])
        self.init(tree: tree, members: members)
    }

    /// The layout of `members` in order (offsets filled in, modes and sizes as a tar holds them).
    init(tree: KID, members input: [Member]) {
        var members = input
        var at: UInt64 = 0
        for i in members.indices {
            let type = members[i].type
            if type == .symlink { members[i].mode = 0o777 } else { members[i].mode &= 0o7777 }
            if type != .file { members[i].size = 0; members[i].kid = nil }
            if type != .symlink { members[i].target = [] }
            members[i].start = at
            members[i].headerSize = UInt64(TreeArchive.headers(members[i]).count)
            at = members[i].end
        }
        self.tree = tree
        self.members = members
        self.size = at + TreeArchive.trailer
    }

    static func padded(_ n: UInt64) -> UInt64 { (n + block - 1) / block * block }

    // MARK: headers

    /// A member's header blocks: a pax extended header when a field does not fit, then the ustar header.
    static func headers(_ m: Member) -> [UInt8] {
        var records: [UInt8] = []
        // pax values are UTF-8 unless said otherwise: names are bytes, so say so when they are not.
        let long = (m.path.count > 100 ? [m.path] : []) + (m.target.count > 100 ? [m.target] : [])
        if long.contains(where: { String(validating: $0, as: UTF8.self) == nil }) {
            records += paxRecord("hdrcharset", Array("BINARY".utf8))
        }
        if m.path.count > 100 { records += paxRecord("path", m.path) }
        if m.target.count > 100 { records += paxRecord("linkpath", m.target) }
        if m.size > maxOctalSize { records += paxRecord("size", Array(String(m.size).utf8)) }
        var out: [UInt8] = []
        if !records.isEmpty {
            out += ustar(name: Array("PaxHeader".utf8), mode: 0o644, size: UInt64(records.count), type: UInt8(ascii: "x"), link: [])
            out += records
            out += [UInt8](repeating: 0, count: Int(padded(UInt64(records.count))) - records.count)
        }
        let type: UInt8 = switch m.type {
        case .file: UInt8(ascii: "0")
        case .symlink: UInt8(ascii: "2")
        case .directory: UInt8(ascii: "5")
        }
        out += ustar(name: m.path.prefix(100), mode: m.mode, size: m.size > maxOctalSize ? 0 : m.size, type: type, link: m.target.prefix(100))
        return out
    }

    /// One pax record, "LEN key=value\n", where LEN counts the whole record.
    static func paxRecord(_ key: String, _ value: [UInt8]) -> [UInt8] {
        let body = key.utf8.count + 1 + value.count + 1
        var length = body + 1
        while String(length).utf8.count + 1 + body != length { length = String(length).utf8.count + 1 + body }
        return Array("\(length) \(key)=".utf8) + value + [UInt8(ascii: "\n")]
    }

    static func ustar<Name: Collection<UInt8>, Link: Collection<UInt8>>(name: Name, mode: UInt32, size: UInt64, type: UInt8, link: Link) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: Int(block))
        func put<C: Collection<UInt8>>(_ bytes: C, at offset: Int) {
            for (i, byte) in bytes.enumerated() { b[offset + i] = byte }
        }
        /// `width - 1` octal digits, zero-padded, then NUL.
        func octal(_ value: UInt64, at offset: Int, width: Int) {
            let digits = Array(String(value, radix: 8).utf8)
            put([UInt8](repeating: UInt8(ascii: "0"), count: width - 1 - digits.count) + digits, at: offset)
        }
        put(name, at: 0)
        octal(UInt64(mode), at: 100, width: 8)
        octal(0, at: 108, width: 8)
        octal(0, at: 116, width: 8)
        octal(size, at: 124, width: 12)
        octal(mtime, at: 136, width: 12)
        put([UInt8](repeating: UInt8(ascii: " "), count: 8), at: 148)
        b[156] = type
        put(link, at: 157)
        put(Array("ustar\0".utf8), at: 257)
        put(Array("00".utf8), at: 263)
        let sum = b.reduce(0) { $0 + UInt64($1) }
        octal(sum, at: 148, width: 7)
        b[155] = UInt8(ascii: " ")
        return b
    }

    // MARK: bytes

    /// Calls `body` with the archive's bytes in `range`, in order, reading
    /// each file through `content(member index, range within the file, body)`.
    func forEachPiece(in range: Range<UInt64>, content: (Int, Range<UInt64>, (UnsafeRawBufferPointer) throws -> Void) throws -> Void,
                      _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        // `content` is handed a closure that calls `body`; neither outlives this call.
        try withoutActuallyEscaping(body) { body in try pieces(in: range, content: content, body) }
    }

    private func pieces(in range: Range<UInt64>, content: (Int, Range<UInt64>, (UnsafeRawBufferPointer) throws -> Void) throws -> Void,
                        _ body: @escaping (UnsafeRawBufferPointer) throws -> Void) throws {
        guard !range.isEmpty else { return }
        let zeros = [UInt8](repeating: 0, count: Int(TreeArchive.trailer))
        /// Emits the part of `bytes` (at archive offset `at`) that lies in `range`.
        func emit(_ bytes: [UInt8], at: UInt64) throws {
            let lo = max(at, range.lowerBound), hi = min(at + UInt64(bytes.count), range.upperBound)
            guard lo < hi else { return }
            try bytes.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[Int(lo - at)..<Int(hi - at)])) }
        }
        // The first member that ends after the range starts.
        var lo = 0, hi = members.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if members[mid].end <= range.lowerBound { lo = mid + 1 } else { hi = mid }
        }
        for i in lo..<members.count {
            let m = members[i]
            guard m.start < range.upperBound else { return }
            try emit(TreeArchive.headers(m), at: m.start)
            if m.size > 0 {
                let what = String(decoding: m.path, as: UTF8.self)
                let from = max(m.dataStart, range.lowerBound), to = min(m.dataStart + m.size, range.upperBound)
                if from < to {
                    var next = from
                    try content(i, (from - m.dataStart)..<(to - m.dataStart)) { piece in
                        next += UInt64(piece.count)
                        guard next <= to else {
                            throw KbuildError(.corrupt, "failed to read the archive of \(tree): \(what) is longer than \(m.size) bytes")
                        }
                        try body(piece)
                    }
                    guard next == to else {
                        throw KbuildError(.corrupt, "failed to read the archive of \(tree): \(what) is shorter than \(m.size) bytes")
                    }
                }
            }
            let pad = TreeArchive.padded(m.size) - m.size
            if pad > 0 { try emit(Array(zeros[..<Int(pad)]), at: m.dataStart + m.size) }
        }
        try emit(zeros, at: size - TreeArchive.trailer)
    }

    /// Calls `body` with the archive's bytes in `range`, each file read from
    /// the Keg (and verified there) through `reader(member index)`.
    public func forEachPiece(in range: Range<UInt64>? = nil, keg: Keg, reader: ((Int) throws -> ObjectReader)? = nil,
                             _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try forEachPiece(in: range ?? 0..<size, content: { i, part, emit in
            try (reader?(i) ?? ObjectReader(keg: keg, kid: members[i].kid!)).forEachPiece(in: part) { piece in
                try piece.withUnsafeBytes { try emit($0) }
            }
        }, body)
    }

    /// The archive's KID, made from the files in the Keg.
    func digest(keg: Keg) throws -> KID {
        var hasher = IncrementalKID()
        try forEachPiece(keg: keg) { hasher.update($0) }
        return hasher.finalize()
    }

    /// The archive's KID, made from the directory its tree is being stored
    /// from (`root`, an open directory; `name` for messages). Files for which
    /// `check(member)` is true are hashed once more on their own, in the same
    /// pass, and their KIDs returned (by member index) for the caller to hold
    /// against the tree's; the rest are nil (the caller proves them unchanged).
    /// Each file's stat as opened is returned too (by member index). It
    /// gives up (cancelled) at the next file once `stopped()` is true.
    func digest(root: Int32, name: String, stopped: () -> Bool = { false }, check: (Member) -> Bool = { _ in true }) throws -> (kid: KID, files: [KID?], stamps: [FileStamp?]) {
        var whole = DualHasher()
        var files = [KID?](repeating: nil, count: members.count)
        var stamps = [FileStamp?](repeating: nil, count: members.count)
        var hashed = false
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        try forEachPiece(in: 0..<size, content: { index, _, emit in
            guard !stopped() else { throw CancellationError() }
            let m = members[index]
            let path = name + "/" + String(decoding: m.path, as: UTF8.self)
            // Not blocking: a file swapped for a fifo must not hang the put.
            let fd = (m.path + [0]).withUnsafeBufferPointer { kb_open_beneath(root, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), O_RDONLY | O_NONBLOCK) }
            guard fd >= 0 else {
                if [ENOENT, ELOOP, EXDEV, ENOTDIR].contains(errno) {
                    throw KbuildError(.conflict, "failed to make the archive of \(path): it changed while it was stored (it is gone or no longer a file)")
                }
                throw KbuildError.syscall("open", path, verb: "make an archive")
            }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
                throw KbuildError(.conflict, "failed to make the archive of \(path): it changed while it was stored (no longer a regular file)")
            }
            stamps[index] = FileStamp(st)
            var file = DualHasher()
            let checked = check(m)
            var left = m.size
            while left > 0 {
                let n = read(fd, buffer.baseAddress, Int(min(UInt64(buffer.count), left)))
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw KbuildError.syscall("read", path, verb: "make an archive") }
                guard n > 0 else { break }
                let piece = UnsafeRawBufferPointer(rebasing: buffer[..<n])
                // Both hashes in one pass; the emitted piece is already in `whole`.
                if checked { whole.update(piece, also: &file) } else { whole.update(piece) }
                hashed = true
                try emit(piece)
                hashed = false
                left -= UInt64(n)
            }
            var probe: UInt8 = 0
            guard left == 0, read(fd, &probe, 1) == 0 else {
                throw KbuildError(.conflict, "failed to make the archive of \(path): it changed while it was stored (its size)")
            }
            if checked { files[index] = file.finalize() }
        }, { if !hashed { whole.update($0) } })
        return (whole.finalize(), files, stamps)
    }

    /// Whether this archive, made from a directory as walked, is the one
    /// `tree` makes, the files hashed as `files` (from `digest(root:name:)`;
    /// nil where the caller proved the file unchanged otherwise): the recipe
    /// then regenerates exactly the bytes that were hashed.
    func matches(_ other: TreeArchive, files: [KID?]) -> Bool {
        guard members.count == other.members.count, size == other.size else { return false }
        for (i, (a, b)) in zip(members, other.members).enumerated() {
            guard a.path == b.path, a.type == b.type, a.mode == b.mode, a.size == b.size, a.target == b.target, a.start == b.start,
                  a.type != .file || a.size == 0 || files[i] == nil || files[i] == b.kid else { return false }
        }
        return true
    }
}
