public import KbuildCore
import Foundation
import Synchronization
import CKbuild

extension Keg {
    /// Stores a file or a directory tree and returns its KID.
    ///
    /// A directory is walked first (without following symlinks inside it),
    /// then its files are stored in parallel, then its trees bottom-up, and
    /// the whole batch is committed at once: a failure or a kill leaves no
    /// new object visible. Device nodes, fifos and sockets are refused, or
    /// left out with `skipSpecialFiles` (a root filesystem's /dev).
    /// `dropSetID` stores files without their setuid and setgid bits (what a
    /// build made: no tenant's file is anyone's root elsewhere); stacks keep them.
    /// `maxBytes` refuses a directory whose files add up to more (their
    /// logical sizes, holes counted: checked in the walk, before a byte is read).
    public func put(path: String, skipSpecialFiles: Bool = false, dropSetID: Bool = false, maxBytes: UInt64? = nil,
                    progress: KegProgress? = nil) throws -> KID {
        try put(path: path, skipSpecialFiles: skipSpecialFiles, dropSetID: dropSetID, maxBytes: maxBytes, archive: nil, progress: progress).tree
    }

    /// Stores a directory as `put` does, and the tar of its tree beside it
    /// (`TreeArchive`, an OCI layer): the tar is hashed from the directory on
    /// a thread of its own while the files are stored, and committed with
    /// them. A file that changes meanwhile is refused (conflict).
    public func putWithArchive(directory path: String, skipSpecialFiles: Bool = false, dropSetID: Bool = false,
                               maxBytes: UInt64? = nil) throws -> (tree: KID, archive: KID, archiveSize: UInt64) {
        try putWithArchive(directory: path, skipSpecialFiles: skipSpecialFiles, dropSetID: dropSetID, maxBytes: maxBytes, checks: ArchiveChecks())
    }

    /// `putWithArchive` with its checks' knobs (tests make every file settled and change one before the end).
    func putWithArchive(directory path: String, skipSpecialFiles: Bool = false, dropSetID: Bool = false,
                        maxBytes: UInt64? = nil, checks: ArchiveChecks) throws -> (tree: KID, archive: KID, archiveSize: UInt64) {
        let stored = try put(path: path, skipSpecialFiles: skipSpecialFiles, dropSetID: dropSetID, maxBytes: maxBytes, archive: checks, progress: nil)
        guard let archive = stored.archive else {
            throw KbuildError(.invalidArgument, "failed to put \(path) with its archive: it is not a directory")
        }
        return (stored.tree, archive.kid, archive.size)
    }

    private func put(path: String, skipSpecialFiles: Bool, dropSetID: Bool, maxBytes: UInt64?, archive: ArchiveChecks?,
                     progress: KegProgress?) throws -> (tree: KID, archive: (kid: KID, size: UInt64)?) {
        let root = BytePath(path)
        var st = stat()
        // The path the user names may be a symlink (e.g. /lib); follow it.
        guard root.withCString({ stat($0, &st) }) == 0 else { throw KbuildError.syscall("stat", path, verb: "put \(path)") }
        let writer = writer()
        let ingest = Ingest(keg: self, writer: writer, progress: progress, skipSpecialFiles: skipSpecialFiles, dropSetID: dropSetID, maxBytes: maxBytes)
        let stored: (tree: KID, archive: (kid: KID, size: UInt64)?)
        switch st.st_mode & S_IFMT {
        case S_IFREG where archive == nil:
            stored = (try ingest.file(root, worker: ingest.pool.take(), followSymlink: true), nil)
        case S_IFDIR:
            stored = try ingest.directory(root, archive: archive)
        default:
            throw KbuildError(.invalidArgument, "failed to put \(path): it is a \(FileType.name(st.st_mode)), not \(archive != nil ? "a directory" : "a regular file, directory or symlink")")
        }
        try writer.commit()
        return stored
    }
}

/// One `put`: the walk, the parallel file ingest and the tree build.
final class Ingest: Sendable {
    let keg: Keg
    let writer: KegWriter
    let progress: KegProgress?
    let skipSpecialFiles: Bool
    let dropSetID: Bool
    let maxBytes: UInt64?
    let pool = WorkerPool()

    init(keg: Keg, writer: KegWriter, progress: KegProgress?, skipSpecialFiles: Bool = false, dropSetID: Bool = false, maxBytes: UInt64? = nil) {
        self.maxBytes = maxBytes
        self.keg = keg
        self.writer = writer
        self.progress = progress
        self.skipSpecialFiles = skipSpecialFiles
        self.dropSetID = dropSetID
    }

    /// A directory as walked: entries with an index into `files` or `dirs`.
    struct Dir {
        var path: BytePath
        var entries: [(name: [UInt8], type: Tree.EntryType, mode: UInt32, size: UInt64, ref: Int, target: [UInt8])] = []
    }

    func directory(_ root: BytePath, archive: ArchiveChecks? = nil) throws -> (tree: KID, archive: (kid: KID, size: UInt64)?) {
        var dirs: [Dir] = []
        var files: [(path: BytePath, relative: BytePath)] = []
        var stamps: [FileStamp] = []
        let walked = FileStamp.now()
        // The walk holds each directory open and names entries relative to it
        // (fstatat, openat with O_NOFOLLOW), and files are later opened beneath
        // the root with no symlink in any component: a directory swapped for a
        // symlink while we read cannot lead the put outside the root.
        let rootFD = root.withCString { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard rootFD >= 0 else { throw KbuildError.syscall("open", root.description, verb: "put \(root)") }
        defer { close(rootFD) }
        var total: UInt64 = 0
        func walk(_ fd: Int32, _ path: BytePath, _ relative: BytePath) throws -> Int {
            let index = dirs.count
            dirs.append(Dir(path: path))
            for name in try readDirectoryNames(fd: fd, path: path) {
                let child = path.appending(name)
                let childRelative = relative.bytes.isEmpty ? BytePath(bytes: name) : relative.appending(name)
                var st = stat()
                guard BytePath(bytes: name).withCString({ fstatat(fd, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else {
                    throw KbuildError.syscall("lstat", child.description, verb: "put \(child)")
                }
                let mode = UInt32(st.st_mode) & (dropSetID && st.st_mode & S_IFMT == S_IFREG ? 0o1777 : 0o7777)
                switch st.st_mode & S_IFMT {
                case S_IFREG:
                    total += UInt64(st.st_size)
                    if let maxBytes, total > maxBytes {
                        throw KbuildError(.tooLarge, "failed to put \(root): its files add up to over \(maxBytes) bytes (at \(childRelative))")
                    }
                    files.append((child, childRelative))
                    stamps.append(FileStamp(st))
                    dirs[index].entries.append((name, .file, mode, UInt64(st.st_size), files.count - 1, []))
                case S_IFDIR:
                    let sub = BytePath(bytes: name).withCString { openat(fd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                    guard sub >= 0 else { throw KbuildError.syscall("open", child.description, verb: "put \(child)") }
                    defer { close(sub) }
                    let at = try walk(sub, child, childRelative)
                    dirs[index].entries.append((name, .directory, mode, 0, at, []))
                case S_IFLNK:
                    let target = try readLink(fd, name, child)
                    dirs[index].entries.append((name, .symlink, 0o777, UInt64(target.count), -1, target))
                default:
                    if skipSpecialFiles { continue }
                    throw KbuildError(.invalidArgument, "failed to put \(child): it is a \(FileType.name(st.st_mode)); only regular files, directories and symlinks can be stored")
                }
            }
            return index
        }
        _ = try walk(rootFD, root, BytePath(bytes: []))

        // The archive's layout is known from the walk: its hash runs beside the ingest.
        let layout = archive.map { _ in TreeArchive(tree: KID(hashing: []), members: Ingest.archiveMembers(dirs)) }
        // A file last changed over a second before the walk (on a local
        // filesystem with fine timestamps), opened by the ingest and the hash
        // as that same inode, and the same at the end, was not changed in
        // between: any write moves its ctime past the walk. So the ingest
        // and the hash read the same bytes. Every other file is hashed twice.
        var rootStat = stat()
        let rootDevice = fstat(rootFD, &rootStat) == 0 ? UInt64(rootStat.st_dev) : nil
        let settled = archive.map { checks in
            // Only files on the root's own filesystem (a mount below it may be NFS or FUSE).
            Set(Ingest.finelyTimed(rootFD) ? stamps.indices.filter { stamps[$0].changed < walked - checks.settledAge && stamps[$0].device == rootDevice } : [])
        } ?? []
        archive?.beforeIngest?()
        let digest = layout.map { layout in
            ArchiveDigest { stopped in try layout.digest(root: rootFD, name: root.description, stopped: stopped) { m in !settled.contains(m.file!) } }
        }
        // The hash's thread reads beneath rootFD: it ends before that is closed, whatever happens here.
        defer { digest?.stopAndWait() }
        let opened = archive.map { _ in OpenedStamps(count: files.count) }
        let kids = try ingestAll(files, beneath: rootFD, opened: opened)
        var trees: [KID: Tree] = [:]

        // Trees bottom-up: a directory's subdirectories always have larger indices.
        var treeKIDs = [KID?](repeating: nil, count: dirs.count)
        let compressor = pool.take()
        for i in dirs.indices.reversed() {
            let entries = dirs[i].entries.map { e in
                Tree.Entry(name: e.name, type: e.type, mode: e.mode, size: e.size,
                           kid: e.type == .file ? kids[e.ref] : e.type == .directory ? treeKIDs[e.ref] : nil,
                           target: e.target)
            }
            let tree = try Tree(entries: entries)
            let bytes = tree.encoded()
            let kid = KID(hashing: bytes)
            try writer.add(kid, kind: .tree, bytes: bytes, compressor: compressor.zstd)
            treeKIDs[i] = kid
            if archive != nil { trees[kid] = tree }
        }
        pool.give(compressor)
        let rootTree = treeKIDs[0]!
        guard let layout, let digest, let archive else { return (rootTree, nil) }
        let (kid, hashed, seen) = try digest.wait()
        archive.beforeCheck?()
        // The tree must make exactly the bytes hashed: the same layout, each file as the ingest read it.
        let made = try TreeArchive(tree: rootTree) { kid in
            guard let tree = trees[kid] else { throw KbuildError(.corrupt, "failed to put \(root): tree \(kid) is not in this put") }
            return tree
        }
        let ingested = opened?.stamps.withLock { $0 } ?? []
        var memberOf = [Int?](repeating: nil, count: files.count)
        for (index, m) in layout.members.enumerated() { if let file = m.file { memberOf[file] = index } }
        for i in settled {
            var st = stat()
            let member = memberOf[i]
            guard files[i].relative.withCString({ fstatat(rootFD, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0, FileStamp(st) == stamps[i],
                  ingested[i] == stamps[i], stamps[i].size == 0 || member.map({ seen[$0] == stamps[i] }) ?? false else {
                throw KbuildError(.conflict, "failed to put \(root) with its archive: \(files[i].path) changed while it was stored")
            }
        }
        guard layout.matches(made, files: hashed) else {
            throw KbuildError(.conflict, "failed to put \(root) with its archive: a file changed while it was stored")
        }
        try BoundRecord.encoded(BoundRecord.treeArchive, object: kid, named: rootTree).withUnsafeBytes { raw in
            try writer.add(kid, kind: .treeArchive, bytes: raw, logicalSize: made.size, compressor: nil)
        }
        return (rootTree, (kid, made.size))
    }

    /// The members of the archive of the tree a walk makes, in the tree's order.
    static func archiveMembers(_ dirs: [Dir]) -> [TreeArchive.Member] {
        var out: [TreeArchive.Member] = []
        func walk(_ index: Int, prefix: [UInt8]) {
            for e in dirs[index].entries.sorted(by: { $0.name.lexicographicallyPrecedes($1.name) }) {
                let path = prefix + e.name + (e.type == .directory ? [UInt8(ascii: "/")] : [])
                out.append(TreeArchive.Member(path: path, type: e.type, mode: e.mode, size: e.size, kid: nil, target: e.target,
                                              file: e.type == .file ? e.ref : nil))
                if e.type == .directory { walk(e.ref, prefix: path) }
            }
        }
        walk(0, prefix: [])
        return out
    }

    /// Stores every file, spread over all cores; the first error stops the rest.
    /// `opened` gets the stamp of each file as opened (by index).
    func ingestAll(_ files: [(path: BytePath, relative: BytePath)], beneath rootFD: Int32, opened: OpenedStamps? = nil) throws -> [KID] {
        let results = Mutex([KID?](repeating: nil, count: files.count))
        try parallelFor(files.count) { i in
            let worker = pool.take()
            defer { pool.give(worker) }
            let kid = try file(files[i].path, worker: worker, beneath: (rootFD, files[i].relative)) { st in
                opened?.stamps.withLock { $0[i] = FileStamp(st) }
            }
            results.withLock { $0[i] = kid }
        }
        return results.withLock { $0.map { $0! } }
    }

    func readLink(_ dirFD: Int32, _ name: [UInt8], _ path: BytePath) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = BytePath(bytes: name).withCString { p in buf.withUnsafeMutableBytes { readlinkat(dirFD, p, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) } }
        guard n >= 0 else { throw KbuildError.syscall("readlink", path.description, verb: "put \(path)") }
        guard n < buf.count else { throw KbuildError(.invalidArgument, "failed to put \(path): symlink target too long") }
        return Array(buf[0..<n])
    }

    /// Files below this size are read whole; larger ones stream in blocks.
    static let streamThreshold = 32 << 20
    static let blockSize = 8 << 20

    /// Stores one regular file: a blob when small, chunks and an index when large.
    /// `path` names the file in messages; with `beneath` it is opened as
    /// `relative` strictly under the directory `fd` (no symlinks, no `..`).
    func file(_ path: BytePath, worker: Worker, followSymlink: Bool = false, beneath: (fd: Int32, relative: BytePath)? = nil,
              opened: (stat) -> Void = { _ in }) throws -> KID {
        let fd: Int32
        if let beneath {
            // Not blocking: a file swapped for a fifo must not hang the put (a regular file reads as ever).
            fd = beneath.relative.withCString { kb_open_beneath(beneath.fd, $0, O_RDONLY | O_NONBLOCK) }
        } else {
            fd = path.withCString { open($0, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (followSymlink ? 0 : O_NOFOLLOW)) }
        }
        guard fd >= 0 else { throw KbuildError.syscall("open", path.description, verb: "put \(path)") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw KbuildError.syscall("fstat", path.description, verb: "put \(path)") }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw KbuildError(.invalidArgument, "failed to put \(path): it is a \(FileType.name(st.st_mode)), not a regular file")
        }
        opened(st)
        let size = Int(st.st_size)
        if size >= Ingest.streamThreshold { return try streamLarge(fd, path: path, worker: worker) }

        let bytes = try readExactly(fd, size, path: path, into: &worker.buffer)
        defer { progress?.add(files: 1, bytes: UInt64(size)) }
        if size >= Keg.chunkingThreshold && DualHasher.interleaved { return try storeChunked(bytes, worker: worker) }
        let kid = DualHasher.kid(of: bytes)
        try store(bytes, kid: kid, worker: worker)
        return kid
    }

    /// A chunked file read whole, with the x86 SHA extensions: its cuts
    /// first, then the whole-file hash and every chunk's in one interleaved
    /// pass (as `streamLarge` does), instead of hashing the bytes twice.
    private func storeChunked(_ bytes: UnsafeRawBufferPointer, worker: Worker) throws -> KID {
        var cuts: [(start: Int, count: Int)] = []
        var at = 0
        var params = Keg.chunkParams
        while at < bytes.count {
            let n = kb_cdc_cut(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + at, bytes.count - at, &params)
            cuts.append((at, n))
            at += n
        }
        var hasher = FileHasher()
        let chunkKIDs = hasher.hash(cuts, in: bytes, fresh: bytes)
        let kid = hasher.finalize()
        if writer.has(kid) { return kid }
        var chunks: [ChunkIndexNode.Entry] = []
        for (cut, ck) in zip(cuts, chunkKIDs) {
            try writer.add(ck, kind: .blob, bytes: UnsafeRawBufferPointer(rebasing: bytes[cut.start..<cut.start + cut.count]),
                           compressor: worker.zstd)
            chunks.append(.init(kid: ck, size: UInt64(cut.count)))
        }
        try storeIndex(file: kid, size: UInt64(bytes.count), chunks: chunks, worker: worker)
        return kid
    }

    /// Stores bytes in memory whose KID is known: a blob when small, else
    /// (unless the file is already here) chunks and an index.
    func store(_ bytes: UnsafeRawBufferPointer, kid: KID, worker: Worker) throws {
        let size = bytes.count
        if size < Keg.chunkingThreshold {
            try writer.add(kid, kind: .blob, bytes: bytes, compressor: worker.zstd)
            return
        }
        if writer.has(kid) { return }
        var chunks: [ChunkIndexNode.Entry] = []
        var at = 0
        var params = Keg.chunkParams
        while at < size {
            let n = kb_cdc_cut(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + at, size - at, &params)
            let chunk = UnsafeRawBufferPointer(rebasing: bytes[at..<at + n])
            let ck = DualHasher.kid(of: chunk)
            try writer.add(ck, kind: .blob, bytes: chunk, compressor: worker.zstd)
            chunks.append(.init(kid: ck, size: UInt64(n)))
            at += n
        }
        try storeIndex(file: kid, size: UInt64(size), chunks: chunks, worker: worker)
    }

    /// Reads `size` bytes into the worker's buffer and returns a view of them.
    func readExactly(_ fd: Int32, _ size: Int, path: BytePath, into buffer: inout [UInt8]) throws -> UnsafeRawBufferPointer {
        if buffer.count < size { buffer = [UInt8](repeating: 0, count: size) }
        var done = 0
        while done < size {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                if n == 0 { throw KbuildError(.conflict, "failed to put \(path): file shrank while it was read") }
                throw KbuildError.syscall("read", path.description, verb: "put \(path)")
            }
            done += n
        }
        return buffer.withUnsafeBytes { UnsafeRawBufferPointer(rebasing: $0[0..<size]) }
    }

    /// A large file in 8 MiB blocks, two buffers in flight: while block n+1 is
    /// hashed (its chunks and the whole file), the new chunks of block n are
    /// compressed and written on the other cores. With the x86 SHA extensions
    /// the whole-file hash and each chunk's hash run interleaved on one core
    /// (`kb_sha256_update2`), which costs little more than one hash.
    func streamLarge(_ fd: Int32, path: BytePath, worker: Worker) throws -> KID {
        let capacity = Ingest.blockSize + Int(Keg.chunkParams.max_size)
        let buffers = [UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64),
                       UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)]
        defer { buffers.forEach { $0.deallocate() } }
        let whole = UnsafeSendable(UnsafeMutablePointer<FileHasher>.allocate(capacity: 1))
        whole.value.initialize(to: FileHasher())
        defer { whole.value.deinitialize(count: 1); whole.value.deallocate() }
        var pending: (buffer: UnsafeRawBufferPointer, cuts: [(start: Int, count: Int)], kids: [KID])?
        var chunks: [ChunkIndexNode.Entry] = []
        var current = 0, carried = 0
        var total: UInt64 = 0
        var eof = false
        var params = Keg.chunkParams
        repeat {
            let buffer = buffers[current]
            var filled = carried
            while !eof && filled < capacity {
                let n = read(fd, buffer.baseAddress! + filled, capacity - filled)
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw KbuildError.syscall("read", path.description, verb: "put \(path)") }
                if n == 0 { eof = true } else { filled += n }
            }
            // Cut points over what is buffered; an unfinished last chunk carries over.
            var cuts: [(start: Int, count: Int)] = []
            var at = 0
            while at < filled {
                let n = kb_cdc_cut(buffer.baseAddress!.assumingMemoryBound(to: UInt8.self) + at, filled - at, &params)
                if at + n == filled && !eof && n < Int(params.max_size) { break }
                cuts.append((at, n))
                at += n
            }
            let view = UnsafeRawBufferPointer(buffer)
            let fresh = UnsafeRawBufferPointer(rebasing: buffer[carried..<filled])
            let kids = try hashAndStore(hashing: (view, cuts, fresh), into: whole, storing: pending)
            pending = (view, cuts, kids)
            for (i, cut) in cuts.enumerated() { chunks.append(.init(kid: kids[i], size: UInt64(cut.count))) }
            total += UInt64(filled - carried)
            progress?.add(bytes: UInt64(filled - carried))
            // The unfinished tail starts the other buffer, whose chunks are stored by now.
            current ^= 1
            carried = filled - at
            if carried > 0 { buffers[current].baseAddress!.copyMemory(from: buffer.baseAddress! + at, byteCount: carried) }
        } while !eof || carried > 0
        _ = try hashAndStore(hashing: nil, into: whole, storing: pending)
        progress?.add(files: 1)
        let kid = whole.value.pointee.finalize()
        if !keg.freshen(kid) {
            try storeIndex(file: kid, size: total, chunks: chunks, worker: worker)
        }
        return kid
    }

    /// One step of the pipeline: hashes the chunks of one block (job 0) while
    /// the other jobs compress and write the chunks of the block before it.
    private func hashAndStore(hashing block: (buffer: UnsafeRawBufferPointer, cuts: [(start: Int, count: Int)], fresh: UnsafeRawBufferPointer)?,
                              into whole: UnsafeSendable<UnsafeMutablePointer<FileHasher>>,
                              storing previous: (buffer: UnsafeRawBufferPointer, cuts: [(start: Int, count: Int)], kids: [KID])?) throws -> [KID] {
        let hashed = Mutex<[KID]>([])
        try parallelFor(1 + (previous?.cuts.count ?? 0)) { job in
            if job == 0 {
                guard let block else { return }
                let kids = whole.value.pointee.hash(block.cuts, in: block.buffer, fresh: block.fresh)
                hashed.withLock { $0 = kids }
                return
            }
            guard let previous else { return }
            let (start, n) = previous.cuts[job - 1]
            let w = pool.take()
            defer { pool.give(w) }
            try writer.add(previous.kids[job - 1], kind: .blob, bytes: UnsafeRawBufferPointer(rebasing: previous.buffer[start..<start + n]), compressor: w.zstd)
        }
        return hashed.withLock { $0 }
    }

    /// Stores the index tree of a chunked file, then its record.
    func storeIndex(file kid: KID, size: UInt64, chunks: [ChunkIndexNode.Entry], worker: Worker) throws {
        var level: UInt8 = 0
        var entries = chunks
        while true {
            let nodes = ChunkIndexNode.group(entries, level: level)
            var next: [ChunkIndexNode.Entry] = []
            for node in nodes {
                let bytes = node.encoded()
                let nk = KID(hashing: bytes)
                try writer.add(nk, kind: .chunkIndex, bytes: bytes, compressor: worker.zstd)
                next.append(.init(kid: nk, size: node.totalSize))
            }
            if next.count == 1 {
                let record = BoundRecord.encoded(BoundRecord.chunkedFile, object: kid, named: next[0].kid)
                try record.withUnsafeBytes { (raw) in
                    try writer.add(kid, kind: .chunkedFile, bytes: raw, logicalSize: size, compressor: nil)
                }
                return
            }
            entries = next
            level += 1
        }
    }
}

/// What one ingest thread owns: a compression context and a read buffer.
final class Worker: @unchecked Sendable {
    let zstd = Zstd.Context()
    var buffer: [UInt8] = []
}

/// Hands each thread a `Worker` of its own and takes it back after.
final class WorkerPool: Sendable {
    private let free = Mutex<[Worker]>([])
    func take() -> Worker { free.withLock { $0.popLast() } ?? Worker() }
    func give(_ w: Worker) { free.withLock { $0.append(w) } }
}

/// A value handed to `concurrentPerform` workers that only read it (or write
/// disjoint parts of it): Dispatch joins them all before the caller goes on.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
