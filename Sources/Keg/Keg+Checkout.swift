public import KbuildCore
import Foundation

extension Keg {
    /// Materialises a tree at `destination` for plain POSIX reading without
    /// copying bytes: each file is a hard link into the shared read-only file
    /// cache (`keg/files/ab/<hex>-<mode>`), which every checkout of the same
    /// content shares. This is what overlayfs lower dirs are made of.
    ///
    /// The checkout must not be written to: its files are the cache's inodes
    /// (read-only, mode without write bits). Across filesystems, or past the
    /// hard-link limit of an inode, a file is copied instead.
    public func checkout(_ kid: KID, to destination: String, progress: KegProgress? = nil) throws {
        let kind = try self.kind(of: kid)
        guard kind == .tree else {
            throw KbuildError(.invalidArgument, "failed to check out \(kid): it is a \(kind), not a tree")
        }
        try materialise(kid, kind: kind, at: destination, verb: "check out \(kid) into \(destination)", progress: progress) { job in
            var cached = try self.cachedFile(job.kid, mode: job.mode)
            var linked = cached.withCString { c in job.path.withCString { link(c, $0) } }
            if linked != 0 && errno == ENOENT {
                // A concurrent gc removed an unused cache file between our check and the link.
                cached = try self.cachedFile(job.kid, mode: job.mode)
                linked = cached.withCString { c in job.path.withCString { link(c, $0) } }
            }
            if linked == 0 { return }
            guard errno == EXDEV || errno == EMLINK else {
                throw KbuildError.syscall("link", job.path.description, verb: "check out \(kid)")
            }
            try self.writeFile(job.kid, to: job.path, mode: job.mode & ~0o222)
        }
    }

    /// Every file in the cache, with the KID in its name, its link count and size.
    func cacheFiles() throws -> [(path: String, kid: KID, links: UInt64, size: UInt64)] {
        var out: [(path: String, kid: KID, links: UInt64, size: UInt64)] = []
        for byte in 0..<256 {
            let fan = Keg.hexByte(byte)
            let dir = filesPath + "/" + fan
            for name in try Keg.listDirectory(dir) {
                guard let dash = name.firstIndex(of: "-"), let kid = try? KID(parsing: fan + name[..<dash]) else { continue }
                var st = stat()
                guard stat(dir + "/" + name, &st) == 0 else { continue }
                out.append((dir + "/" + name, kid, UInt64(st.st_nlink), UInt64(st.st_size)))
            }
        }
        return out
    }

    /// The cache file holding `kid` with `mode` (write bits removed), made on first use.
    func cachedFile(_ kid: KID, mode: UInt32) throws -> BytePath {
        let hex = kid.hex
        let path = BytePath(filesPath + "/" + hex.prefix(2) + "/" + hex.dropFirst(2) + "-" + String(mode & ~0o222, radix: 8))
        var st = stat()
        if path.withCString({ stat($0, &st) }) == 0 {
            if UInt64(st.st_size) == (try logicalSize(of: kid)) { return path }
            // Damaged (e.g. cut short by a crash): replace it.
            _ = path.withCString { unlink($0) }
        }
        let tmp = BytePath(tmpPath + "/file-\(getpid())-\(UInt64.random(in: 0...UInt64.max))")
        do {
            try writeFile(kid, to: tmp, mode: mode & ~0o222, durable: true)
            var renamed = tmp.withCString { t in path.withCString { rename(t, $0) } }
            if renamed != 0 && errno == ENOENT {
                try Keg.makeParent(of: path.description)
                renamed = tmp.withCString { t in path.withCString { rename(t, $0) } }
            }
            guard renamed == 0 else { throw KbuildError.syscall("rename", path.description, verb: "cache \(kid)") }
        } catch {
            _ = tmp.withCString { unlink($0) }
            throw error
        }
        return path
    }
}
