public import KbuildCore
public import Foundation
import CKbuild
import CZstd
public import KbuildState

/// The Keg: kbuild's one content-addressed store. Every source tree, file,
/// layer, image, log and record is an immutable object here, named by its KID.
///
/// Objects live in pack files under `keg/packs` (a batch of writes is one
/// pack, see `PackSet`), or loose at `keg/objects/ab/cdef…` (the KID's hex,
/// fanned out by its first byte; single objects such as records). A reader
/// always checks that the bytes hash to the name; a writer makes objects
/// visible only once they are durable (`KegWriter`), so no reader ever sees
/// half an object.
public final class Keg: Sendable {
    public let dataDir: DataDir
    let objectsPath: String
    let tmpPath: String
    let filesPath: String
    let packsPath: String
    /// Objects stored in pack files (`keg/packs`), beside the loose ones.
    let packs: PackSet

    /// Names of objects being written, in the fan-out directories.
    static let stagingPrefix = ".tmp-"

    /// Files at or above this size are split into content-defined chunks.
    public static let chunkingThreshold = 1 << 20
    static let chunkParams = kb_cdc_params(min_size: 16 << 10, avg_size: 64 << 10, max_size: 256 << 10)

    /// Where records are kept beside this Keg (etcd, when the state is there), or nil.
    public let records: (any RecordReplica)?

    /// Opens the Keg in `dataDir`, creating its directories on first use; `records`: see `Keg+RecordContent`.
    public init(dataDir: DataDir, records: (any RecordReplica)? = nil) throws {
        self.dataDir = dataDir
        self.records = records
        objectsPath = dataDir.kegObjects.path
        tmpPath = dataDir.kegTmp.path
        filesPath = dataDir.kegFiles.path
        packsPath = dataDir.keg.appendingPathComponent("packs").path
        try dataDir.create()
        packs = try PackSet(dir: packsPath)
        // The fan-out directories (objects/ab, files/ab) are made when first
        // written to (`Keg.makeParent`): most objects go into packs.
    }

    /// Makes the fan-out directory of `path` (an object or cache file path).
    static func makeParent(of path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        if mkdir(dir, 0o755) != 0 && errno != EEXIST { throw KbuildError.syscall("mkdir", dir, verb: "write \(path)") }
    }

    static func hexByte(_ b: Int) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[b >> 4], digits[b & 15]])
    }

    func objectPath(_ kid: KID) -> String {
        let hex = kid.hex
        return objectsPath + "/" + hex.prefix(2) + "/" + hex.dropFirst(2)
    }

    /// Whether the object is stored (it may still be corrupt: `fsck` checks).
    public func contains(_ kid: KID) -> Bool {
        packs.locate(kid) != nil || access(objectPath(kid), F_OK) == 0
    }

    /// Where an object is stored, for messages: its loose file or its pack.
    func storedPath(_ kid: KID) -> String {
        packs.locate(kid).map { packs.path($0.pack) + " (packed)" } ?? objectPath(kid)
    }

    /// Resolves a full KID or a unique prefix of at least 8 hex digits.
    public func resolve(_ prefix: KIDPrefix) throws -> KID {
        if let kid = prefix.complete {
            guard contains(kid) else { throw KbuildError(.notFound, "failed to find object \(kid): not in the Keg") }
            return kid
        }
        let dir = objectsPath + "/" + prefix.hex.prefix(2)
        let rest = String(prefix.hex.dropFirst(2))
        var found = Set<KID>()
        for name in try Keg.listDirectory(dir) where name.hasPrefix(rest) {
            if let kid = try? KID(parsing: String(prefix.hex.prefix(2)) + name) { found.insert(kid) }
        }
        for pack in packs.all {
            for i in 0..<pack.count {
                let kid = pack.kid(at: i)
                if kid.hex.hasPrefix(prefix.hex) { found.insert(kid) }
            }
        }
        let matches = Array(found)
        switch matches.count {
        case 0: throw KbuildError(.notFound, "failed to find object \(prefix): no object has this prefix")
        case 1: return matches[0]
        default:
            let listed = matches.sorted().prefix(5).map { $0.short + String($0.hex.dropFirst(8).prefix(4)) }.joined(separator: ", ")
            throw KbuildError(.ambiguous, "failed to find object \(prefix): ambiguous prefix matches \(matches.count) objects (\(listed)); give more digits")
        }
    }

    /// The header and the stored payload (still compressed) of an object.
    func readStored(_ kid: KID) throws -> (ObjectHeader, [UInt8]) {
        let bytes: [UInt8]
        if let location = packs.locate(kid) {
            do {
                bytes = try packs.read(location, kid: kid)
            } catch let error as KbuildError where error.code == .io {
                // gc may have just rewritten the pack: look again.
                packs.rescanIfChanged()
                guard let moved = packs.locate(kid), moved.pack.name != location.pack.name else {
                    if access(objectPath(kid), F_OK) == 0 { return try readStored(kid) }
                    throw error
                }
                bytes = try packs.read(moved, kid: kid)
            }
        } else if access(objectPath(kid), F_OK) != 0, packs.rescanIfChanged(force: true), let location = packs.locate(kid) {
            bytes = try packs.read(location, kid: kid)  // packed by another process a moment ago
        } else {
            bytes = try Keg.readFile(objectPath(kid), verb: "read object \(kid)", missing: "not in the Keg")
        }
        guard bytes.count >= ObjectHeader.size else { throw KbuildError(.corrupt, "failed to read object \(kid): truncated header (\(storedPath(kid)))") }
        let header = try bytes.withUnsafeBytes { (raw) in try ObjectHeader(decoding: raw, kid: kid) }
        return (header, Array(bytes[ObjectHeader.size...]))
    }

    /// The kind of a stored object (reads only its header, when loose).
    public func kind(of kid: KID) throws -> ObjectKind {
        if packs.locate(kid) != nil { return try readStored(kid).0.kind }
        let path = objectPath(kid)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw KbuildError(.notFound, "failed to read object \(kid): not in the Keg") }
            throw KbuildError.syscall("open", path, verb: "read object \(kid)")
        }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: ObjectHeader.size)
        let n = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n == ObjectHeader.size else { throw KbuildError(.corrupt, "failed to read object \(kid): truncated header") }
        return try head.withUnsafeBytes { (raw) in try ObjectHeader(decoding: raw, kid: kid) }.kind
    }

    /// The size of the bytes the KID names (the whole file for a chunked file).
    public func logicalSize(of kid: KID) throws -> UInt64 {
        try readStored(kid).0.logicalSize
    }

    /// The logical bytes of a blob, tree or index node, verified against the KID.
    func readVerified(_ kid: KID) throws -> [UInt8] {
        let (header, payload) = try readStored(kid)
        guard header.kind != .chunkedFile && header.kind != .treeArchive else {
            throw KbuildError(.invalidArgument, "failed to read object \(kid): a \(header.kind) is read with a reader, not whole")
        }
        return try decode(header: header, payload: payload, kid: kid)
    }

    func decode(header: ObjectHeader, payload: [UInt8], kid: KID) throws -> [UInt8] {
        guard header.logicalSize <= UInt64(Int.max / 2) else { throw KbuildError(.corrupt, "failed to read object \(kid): absurd size") }
        var bytes: [UInt8]
        switch header.encoding {
        case .raw:
            bytes = payload
        case .zstd:
            // A damaged header must not make us allocate what the frame does not hold.
            let frameSize = payload.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
            guard frameSize == header.logicalSize else {
                throw KbuildError(.corrupt, "failed to read object \(kid): header says \(header.logicalSize) bytes, compressed frame holds \(Int64(bitPattern: frameSize)) (\(storedPath(kid)))")
            }
            bytes = [UInt8](repeating: 0, count: Int(header.logicalSize))
            try payload.withUnsafeBytes { (src) in
                try bytes.withUnsafeMutableBytes { (dst) in try Zstd.decompress(src, into: dst, kid: kid) }
            }
        }
        guard UInt64(bytes.count) == header.logicalSize, KID(hashing: bytes) == kid else {
            throw KbuildError(.corrupt, "failed to read object \(kid): content does not hash to its KID (\(storedPath(kid)))")
        }
        return bytes
    }

    /// Decodes a blob whose size is known into `destination` and verifies it there.
    func readVerified(_ kid: KID, into destination: UnsafeMutableRawBufferPointer) throws {
        let (header, payload) = try readStored(kid)
        guard header.kind != .chunkedFile, header.kind != .treeArchive, header.logicalSize == UInt64(destination.count) else {
            throw KbuildError(.corrupt, "failed to read chunk \(kid): it is a \(header.logicalSize)-byte \(header.kind), want \(destination.count) bytes")
        }
        switch header.encoding {
        case .raw:
            guard payload.count == destination.count else { throw KbuildError(.corrupt, "failed to read object \(kid): payload is \(payload.count) bytes, header says \(destination.count)") }
            payload.withUnsafeBytes { destination.copyMemory(from: $0) }
        case .zstd:
            try payload.withUnsafeBytes { try Zstd.decompress($0, into: destination, kid: kid) }
        }
        guard KID(hashing: UnsafeRawBufferPointer(destination)) == kid else {
            throw KbuildError(.corrupt, "failed to read object \(kid): content does not hash to its KID (\(storedPath(kid)))")
        }
    }

    /// The logical bytes of any object, whatever form it is stored in. Two
    /// objects with the same bytes are one object (the KID is the hash of the
    /// bytes alone), so a tree's bytes may be stored as a file and the other
    /// way round: readers interpret bytes by where they were named, not by the
    /// stored kind. Chunked files are reassembled (at most `maxWhole` bytes).
    public func logicalBytes(_ kid: KID, maxWhole: UInt64 = 256 << 20) throws -> [UInt8] {
        let (header, payload) = try readStored(kid)
        guard header.kind == .chunkedFile || header.kind == .treeArchive else { return try decode(header: header, payload: payload, kid: kid) }
        guard header.logicalSize <= maxWhole else {
            throw KbuildError(.invalidArgument, "failed to read object \(kid): \(header.logicalSize) bytes is too large to read whole")
        }
        var out: [UInt8] = []
        out.reserveCapacity(Int(header.logicalSize))
        if header.kind == .treeArchive {
            try streamArchive(kid, header: header, payload: payload) { out.append(contentsOf: $0) }
            return out
        }
        for chunk in try chunks(ofChunkedFile: kid) { out += try readVerified(chunk.kid) }
        guard KID(hashing: out) == kid else { throw KbuildError(.corrupt, "failed to read file \(kid): chunks do not reassemble to it") }
        return out
    }

    /// The entries of the tree named `kid` (its bytes decoded as a tree).
    public func tree(_ kid: KID) throws -> Tree {
        try Tree(decoding: try logicalBytes(kid), kid: kid)
    }

    func chunkIndexNode(_ kid: KID) throws -> ChunkIndexNode {
        try ChunkIndexNode(decoding: try logicalBytes(kid), kid: kid)
    }

    func chunkedFileRoot(_ kid: KID, payload: [UInt8]) throws -> KID {
        try BoundRecord.decoded(BoundRecord.chunkedFile, payload, object: kid, what: "chunked-file record")
    }

    /// The chunks of a chunked file in order, with their sizes (index nodes verified).
    func chunks(ofChunkedFile kid: KID) throws -> [ChunkIndexNode.Entry] {
        let (header, payload) = try readStored(kid)
        guard header.kind == .chunkedFile else { throw KbuildError(.corrupt, "failed to read file \(kid): it is a \(header.kind)") }
        let root = try chunkedFileRoot(kid, payload: payload)
        var out: [ChunkIndexNode.Entry] = []
        func walk(_ node: KID, level: Int) throws {
            let n = try chunkIndexNode(node)
            guard Int(n.level) == level else { throw KbuildError(.corrupt, "failed to read chunk index \(node): level \(n.level), want \(level)") }
            if n.level == 0 {
                for e in n.entries where e.size == 0 || e.size > UInt64(Keg.chunkParams.max_size) {
                    throw KbuildError(.corrupt, "failed to read chunk index \(node): chunk \(e.kid) of \(e.size) bytes is outside 1...\(Keg.chunkParams.max_size)")
                }
                out.append(contentsOf: n.entries)
                return
            }
            for e in n.entries { try walk(e.kid, level: level - 1) }
        }
        let top = try chunkIndexNode(root)
        try walk(root, level: Int(top.level))
        let total = out.reduce(0) { $0 + $1.size }
        guard total == header.logicalSize else {
            throw KbuildError(.corrupt, "failed to read file \(kid): chunks add up to \(total) bytes, want \(header.logicalSize)")
        }
        return out
    }

    // MARK: file helpers

    static func readFile(_ path: String, verb: String, missing: String = "no such file") throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw KbuildError(.notFound, "failed to \(verb): \(missing)") }
            throw KbuildError.syscall("open", path, verb: verb)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw KbuildError.syscall("fstat", path, verb: verb) }
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < out.count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw n == 0 ? KbuildError(.corrupt, "failed to \(verb): \(path) shrank while read") : .syscall("pread", path, verb: verb) }
            done += n
        }
        return out
    }

    static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else {
            if errno == ENOENT { return [] }
            throw KbuildError.syscall("opendir", path, verb: "list \(path)")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

extension Keg {
    /// Objects younger than this are never collected; `freshen` keeps a
    /// deduplicated object young so a concurrent `gc` cannot take it away from
    /// a `put` that is about to reference it (git's gc.pruneExpire, same idea).
    public static let freshenAfter: TimeInterval = 600

    /// Whether the object is stored; if it is and was last touched long ago,
    /// touches it (its file, or its pack).
    func freshen(_ kid: KID) -> Bool {
        let path: String
        if let location = packs.locate(kid) {
            path = packs.path(location.pack)
        } else {
            path = objectPath(kid)
        }
        var st = stat()
        guard stat(path, &st) == 0 else { return false }
        let now = time(nil)
        if now - st.st_mtim.tv_sec > Int(Keg.freshenAfter) {
            _ = utimensat(AT_FDCWD, path, nil, 0)
        }
        return true
    }
}
