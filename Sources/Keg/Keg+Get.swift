public import KbuildCore
import Foundation
import CKbuild
import Synchronization

extension Keg {
    /// How much of a chunked file is decoded at once while the last batch is written.
    static let restoreBatch = 8 << 20

    /// Restores an object to `destination`, which must not exist: a tree as a
    /// directory (byte-identical files, modes and symlinks), a file as a file.
    ///
    /// Everything is written under a temporary sibling name first and renamed
    /// into place at the end, so a failure leaves nothing at `destination`.
    public func get(_ kid: KID, to destination: String, progress: KegProgress? = nil) throws {
        let kind = try self.kind(of: kid)
        try materialise(kid, kind: kind, at: destination, verb: "get \(kid) into \(destination)", progress: progress) { (job) in
            try self.writeFile(job.kid, to: job.path, mode: job.mode)
        }
    }

    struct FileJob {
        var kid: KID
        var path: BytePath
        var mode: UInt32
    }

    /// The shared skeleton of `get` and `checkout`: directories and symlinks are
    /// made in one pass, files by `place` on every core, directory modes last
    /// (so a read-only directory can still be filled), then one rename.
    func materialise(_ kid: KID, kind: ObjectKind, at destination: String, verb: String, progress: KegProgress?,
                     place: @Sendable (FileJob) throws -> Void) throws {
        var probe = stat()
        if lstat(destination, &probe) == 0 {
            throw KbuildError(.conflict, "failed to \(verb): \(destination) already exists")
        }
        let dest = URL(fileURLWithPath: destination)
        var parent = stat()
        let parentPath = dest.deletingLastPathComponent().path
        guard stat(parentPath, &parent) == 0 else {
            if errno == ENOENT { throw KbuildError(.notFound, "failed to \(verb): the parent directory \(parentPath) does not exist") }
            throw KbuildError.syscall("stat", parentPath, verb: verb)
        }
        guard parent.st_mode & S_IFMT == S_IFDIR else {
            throw KbuildError(.invalidArgument, "failed to \(verb): \(parentPath) is not a directory")
        }
        let staging = dest.deletingLastPathComponent().appendingPathComponent(".\(dest.lastPathComponent).kbuild-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        let root = BytePath(staging)
        do {
            switch kind {
            case .tree:
                var jobs: [FileJob] = []
                var dirModes: [(BytePath, UInt32)] = []
                try layOut(tree: kid, at: root, mode: 0o755, jobs: &jobs, dirModes: &dirModes)
                try runParallel(jobs, progress: progress, place)
                for (path, mode) in dirModes.reversed() {
                    guard path.withCString({ chmod($0, mode_t(mode)) }) == 0 else { throw KbuildError.syscall("chmod", path.description, verb: verb) }
                }
            case .blob, .chunkedFile, .treeArchive:
                try place(FileJob(kid: kid, path: root, mode: 0o644))
            case .chunkIndex:
                throw KbuildError(.invalidArgument, "failed to \(verb): \(kid) is an internal chunk index, not a file or tree")
            }
            guard rename(staging, destination) == 0 else { throw KbuildError.syscall("rename", destination, verb: verb) }
        } catch {
            Keg.removeTree(staging)
            throw error
        }
    }

    private func layOut(tree kid: KID, at path: BytePath, mode: UInt32, jobs: inout [FileJob], dirModes: inout [(BytePath, UInt32)]) throws {
        guard path.withCString({ mkdir($0, 0o700) }) == 0 else { throw KbuildError.syscall("mkdir", path.description, verb: "restore tree \(kid)") }
        dirModes.append((path, mode))
        for entry in try tree(kid).entries {
            let child = path.appending(entry.name)
            switch entry.type {
            case .directory:
                try layOut(tree: entry.kid!, at: child, mode: entry.mode, jobs: &jobs, dirModes: &dirModes)
            case .symlink:
                var target = entry.target
                target.append(0)
                let ok = child.withCString { c in target.withUnsafeBufferPointer { t in t.withMemoryRebound(to: CChar.self) { symlink($0.baseAddress!, c) } } }
                guard ok == 0 else { throw KbuildError.syscall("symlink", child.description, verb: "restore tree \(kid)") }
            case .file:
                jobs.append(FileJob(kid: entry.kid!, path: child, mode: entry.mode))
            }
        }
    }

    private func runParallel(_ jobs: [FileJob], progress: KegProgress?, _ place: @Sendable (FileJob) throws -> Void) throws {
        try parallelFor(jobs.count) { i in
            try place(jobs[i])
            progress?.add(files: 1)
        }
    }

    /// Writes a file object's bytes to a new file at `path` with `mode`.
    func writeFile(_ kid: KID, to path: BytePath, mode: UInt32, durable: Bool = false) throws {
        let fd = path.withCString { open($0, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
        guard fd >= 0 else { throw KbuildError.syscall("open", path.description, verb: "restore \(kid)") }
        defer { close(fd) }
        try writeContent(kid, to: fd, path: path)
        guard fchmod(fd, mode_t(mode)) == 0 else { throw KbuildError.syscall("fchmod", path.description, verb: "restore \(kid)") }
        if durable { guard fsync(fd) == 0 else { throw KbuildError.syscall("fsync", path.description, verb: "restore \(kid)") } }
    }

    /// Writes the logical bytes of a blob or chunked file to `fd`, verifying each piece.
    func writeContent(_ kid: KID, to fd: Int32, path: BytePath) throws {
        let (header, payload) = try readStored(kid)
        switch header.kind {
        case .blob, .tree, .chunkIndex:
            // A file whose bytes happen to equal a tree's is that same object.
            let bytes = try decode(header: header, payload: payload, kid: kid)
            guard bytes.withUnsafeBytes({ Keg.writeAll(fd, $0) }) else { throw KbuildError.syscall("write", path.description, verb: "restore \(kid)") }
        case .treeArchive:
            try streamArchive(kid, header: header, payload: payload) { piece in
                guard Keg.writeAll(fd, piece) else { throw KbuildError.syscall("write", path.description, verb: "restore \(kid)") }
            }
        case .chunkedFile:
            try writeChunked(kid, size: header.logicalSize, to: fd, path: path)
            // Holes at the end are not written: the size makes them.
            guard ftruncate(fd, off_t(header.logicalSize)) == 0 else { throw KbuildError.syscall("ftruncate", path.description, verb: "restore \(kid)") }
        }
    }

    /// Restores a chunked file in batches of about 8 MiB: the chunks of batch n
    /// are read, decompressed and verified on every core into one buffer while
    /// batch n-1 is written from the other buffer by a single `write(2)`.
    /// (Parallel `pwrite`s to one file spin on its inode lock; a shared mapping
    /// makes the kernel zero every page before we fill it.)
    func writeChunked(_ kid: KID, size: UInt64, to fd: Int32, path: BytePath) throws {
        var batches: [[(chunk: ChunkIndexNode.Entry, offset: Int)]] = [[]]
        var inBatch = 0
        for chunk in try chunks(ofChunkedFile: kid) {
            if inBatch + Int(chunk.size) > Keg.restoreBatch && !batches[batches.count - 1].isEmpty {
                batches.append([])
                inBatch = 0
            }
            batches[batches.count - 1].append((chunk, inBatch))
            inBatch += Int(chunk.size)
        }
        // Where each batch starts in the file.
        var batchStarts: [off_t] = []
        var at: off_t = 0
        for batch in batches {
            batchStarts.append(at)
            if let last = batch.last { at += off_t(last.offset) + off_t(last.chunk.size) }
        }
        let capacity = Keg.restoreBatch + Int(Keg.chunkParams.max_size)
        let buffers = [UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64),
                       UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)]
        defer { buffers.forEach { $0.deallocate() } }
        let pathText = path.description
        for b in 0...batches.count {
            let decode = b < batches.count ? batches[b] : []
            let (fill, drain) = (buffers[b % 2], buffers[(b + 1) % 2])
            let written = b > 0 ? batches[b - 1] : []
            try parallelFor(decode.count + 1) { job in
                if job == 0 {
                    // Write the batch before this one, in order, leaving all-zero blocks as holes.
                    guard let last = written.last else { return }
                    let length = last.offset + Int(last.chunk.size)
                    guard Keg.writeSparse(fd, UnsafeRawBufferPointer(rebasing: drain[0..<length]), at: batchStarts[b - 1]) else {
                        throw KbuildError.syscall("pwrite", pathText, verb: "restore \(kid)")
                    }
                    return
                }
                let (chunk, offset) = decode[job - 1]
                try readVerified(chunk.kid, into: UnsafeMutableRawBufferPointer(rebasing: fill[offset..<offset + Int(chunk.size)]))
            }
        }
    }

    /// Writes `bytes` at `offset` of a new file, skipping 4 KiB blocks of
    /// zeros (they stay holes: a sparse file stays sparse on restore, and a
    /// 4 GiB file of zeros takes no disk). False with errno on a failed write.
    static func writeSparse(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: off_t) -> Bool {
        let block = 4096
        var start = 0
        while start < bytes.count {
            // The next run of non-zero blocks.
            var end = start
            while end < bytes.count, kb_is_zero(bytes.baseAddress! + end, min(block, bytes.count - end)) == 0 { end += block }
            if end > start {
                let run = UnsafeRawBufferPointer(rebasing: bytes[start..<min(end, bytes.count)])
                var done = 0
                while done < run.count {
                    let n = pwrite(fd, run.baseAddress! + done, run.count - done, offset + off_t(start + done))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { return false }
                    done += n
                }
            }
            start = min(end, bytes.count)
            while start < bytes.count, kb_is_zero(bytes.baseAddress! + start, min(block, bytes.count - start)) != 0 { start += block }
        }
        return true
    }

    /// rm -rf, for cleaning up after a failed restore (makes read-only dirs writable first).
    static func removeTree(_ path: String) { removeTree(BytePath(path)) }

    static func removeTree(_ path: BytePath) {
        var st = stat()
        guard path.withCString({ lstat($0, &st) }) == 0 else { return }
        if st.st_mode & S_IFMT == S_IFDIR {
            _ = path.withCString { chmod($0, 0o700) }
            if let names = try? readDirectoryNames(path) {
                for name in names { removeTree(path.appending(name)) }
            }
            _ = path.withCString { rmdir($0) }
        } else {
            _ = path.withCString { unlink($0) }
        }
    }
}
