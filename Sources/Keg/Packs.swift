import KbuildCore
import CKbuild
import Foundation
import Synchronization

/// Pack files: many objects in one file, so that a batch of thousands of
/// small objects costs two file creations, not thousands (creating a file is
/// the dominant cost of storing small objects: ~0.6 ms each on the VMs this
/// was measured on, against ~10 µs to append 20 KB to an open file).
///
///     keg/packs/<name>.pack   "KPK1", then each object exactly as its loose
///                             file would hold it (header + payload)
///     keg/packs/<name>.idx    "KPI1", count (u32 LE), then per object sorted
///                             by KID: KID (32 bytes), offset (u64 LE), length
///                             (u32 LE); then the SHA-256 of all of the above
///
/// A pack is visible once its index is renamed into place (after the pack,
/// and after both are durable), so readers never see half a pack. Objects in
/// packs are read, verified and collected like loose ones: `gc` deletes a pack
/// whose objects are all unreachable and rewrites one that is partly so.
final class PackSet: Sendable {
    struct Pack: Sendable {
        let name: String
        /// Sorted entries, 44 bytes each.
        let index: [UInt8]
        let count: Int

        func kid(at i: Int) -> KID {
            index.withUnsafeBytes { KID(rawBytes: UnsafeRawBufferPointer(rebasing: $0[(i * 44)..<(i * 44 + 32)]))! }
        }

        func entry(at i: Int) -> (offset: UInt64, length: UInt32) {
            index.withUnsafeBytes { raw in
                (raw.loadUnaligned(fromByteOffset: i * 44 + 32, as: UInt64.self).littleEndian,
                 raw.loadUnaligned(fromByteOffset: i * 44 + 40, as: UInt32.self).littleEndian)
            }
        }

        func find(_ kid: KID) -> Int? {
            let target = kid.rawBytes
            var lo = 0, hi = count
            while lo < hi {
                let mid = (lo + hi) / 2
                let order = index.withUnsafeBytes { raw -> Int32 in
                    target.withUnsafeBytes { memcmp(raw.baseAddress! + mid * 44, $0.baseAddress!, 32) }
                }
                if order == 0 { return mid }
                if order < 0 { lo = mid + 1 } else { hi = mid }
            }
            return nil
        }
    }

    struct Location: Sendable {
        let pack: Pack
        let offset: UInt64
        let length: UInt32
    }

    let dir: String
    private struct State {
        var packs: [String: Pack] = [:]
        var scannedAt = timespec()
        /// Whether the last scan saw a modification time old enough that a later
        /// change must show as a new one (the kernel's clock for it is coarse:
        /// two renames a few milliseconds apart can leave the same time).
        var settled = false
        var fds: [String: Int32] = [:]
    }
    private let state = Mutex(State())

    static let indexMagic = Array("KPI1".utf8)
    static let packMagic = Array("KPK1".utf8)

    init(dir: String) throws {
        self.dir = dir
        if mkdir(dir, 0o755) != 0 && errno != EEXIST { throw KbuildError.syscall("mkdir", dir, verb: "open keg") }
        rescanIfChanged()
    }

    deinit {
        state.withLock { s in for fd in s.fds.values { close(fd) } }
    }

    /// Where `kid` is packed, if it is. Packs written or deleted since the
    /// last look (by this process or another) are seen: the directory's
    /// modification time says when to look again.
    func locate(_ kid: KID) -> Location? {
        if let found = search(kid) { return found }
        return rescanIfChanged() ? search(kid) : nil
    }

    private func search(_ kid: KID) -> Location? {
        state.withLock { s in
            for pack in s.packs.values {
                if let i = pack.find(kid) {
                    let (offset, length) = pack.entry(at: i)
                    return Location(pack: pack, offset: offset, length: length)
                }
            }
            return nil
        }
    }

    /// Every pack there is now (gc and fsck must not miss one).
    var all: [Pack] {
        rescanIfChanged(force: true)
        return state.withLock { Array($0.packs.values) }
    }

    /// Loads indexes that appeared and forgets packs that went; true if it looked.
    @discardableResult
    func rescanIfChanged(force: Bool = false) -> Bool {
        var st = stat()
        guard stat(dir, &st) == 0 else { return false }
        let unchanged = !force && state.withLock { s in
            s.settled && s.scannedAt.tv_sec == st.st_mtim.tv_sec && s.scannedAt.tv_nsec == st.st_mtim.tv_nsec
        }
        if unchanged { return false }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let age = Double(now.tv_sec - st.st_mtim.tv_sec) + Double(now.tv_nsec - st.st_mtim.tv_nsec) / 1e9
        let names = ((try? Keg.listDirectory(dir)) ?? []).filter { $0.hasSuffix(".idx") && !$0.hasPrefix(Keg.stagingPrefix) }.map { String($0.dropLast(4)) }
        let known = state.withLock { Set($0.packs.keys) }
        var loaded: [String: Pack] = [:]
        for name in names where !known.contains(name) {
            if let pack = try? PackSet.loadIndex(dir: dir, name: name) { loaded[name] = pack }
        }
        let present = Set(names)
        state.withLock { s in
            s.scannedAt = st.st_mtim
            s.settled = age > 0.1
            for (name, pack) in loaded { s.packs[name] = pack }
            for name in s.packs.keys where !present.contains(name) {
                s.packs[name] = nil
                if let fd = s.fds.removeValue(forKey: name) { close(fd) }
            }
        }
        return true
    }

    static func loadIndex(dir: String, name: String) throws -> Pack {
        let path = "\(dir)/\(name).idx"
        let bytes = try Keg.readFile(path, verb: "read pack index \(name)")
        guard bytes.count >= 8 + 32, Array(bytes[0..<4]) == indexMagic else {
            throw KbuildError(.corrupt, "failed to read pack index \(path): not a pack index")
        }
        let count = Int(bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian })
        guard bytes.count == 8 + count * 44 + 32, KID(hashing: Array(bytes[0..<(8 + count * 44)])).rawBytes == Array(bytes[(8 + count * 44)...]) else {
            throw KbuildError(.corrupt, "failed to read pack index \(path): truncated or damaged (its checksum does not match)")
        }
        return Pack(name: name, index: Array(bytes[8..<(8 + count * 44)]), count: count)
    }

    /// The stored bytes (header + payload) of a packed object.
    func read(_ location: Location, kid: KID) throws -> [UInt8] {
        let name = location.pack.name
        // A duplicate of the cached descriptor: the cache may close its own
        // (evicted, or the pack went) while this read is under way.
        let fd = try state.withLock { s -> Int32 in
            if s.fds[name] == nil {
                if s.fds.count >= 128 {
                    for fd in s.fds.values { close(fd) }
                    s.fds = [:]
                }
                let fd = open("\(dir)/\(name).pack", O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw KbuildError.syscall("open", "\(dir)/\(name).pack", verb: "read object \(kid)") }
                s.fds[name] = fd
            }
            let copy = fcntl(s.fds[name]!, F_DUPFD_CLOEXEC, 0)
            guard copy >= 0 else { throw KbuildError.syscall("dup", "\(dir)/\(name).pack", verb: "read object \(kid)") }
            return copy
        }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: Int(location.length))
        var done = 0
        while done < out.count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(location.offset) + off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw n == 0 ? KbuildError(.corrupt, "failed to read object \(kid): pack \(name) is truncated") : .syscall("pread", "\(dir)/\(name).pack", verb: "read object \(kid)")
            }
            done += n
        }
        return out
    }

    func path(_ pack: Pack) -> String { "\(dir)/\(pack.name).pack" }
}

/// A pack being written: objects appended at reserved offsets (from several
/// threads), then the index, then both made durable and visible.
final class PackBuilder: Sendable {
    private struct State {
        var entries: [(kid: KID, offset: UInt64, length: UInt32)] = []
        var end: UInt64 = UInt64(PackSet.packMagic.count)
        var failed = false
    }
    let dir: String
    let name: String
    let fd: Int32
    private let state = Mutex(State())

    init(dir: String) throws {
        name = "pack-\(getpid())-\(String(UInt64.random(in: 0...UInt64.max), radix: 36))"
        self.dir = dir
        fd = open("\(dir)/\(Keg.stagingPrefix)\(name).pack", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o444)
        guard fd >= 0 else { throw KbuildError.syscall("open", "\(dir)/\(Keg.stagingPrefix)\(name).pack", verb: "write a pack") }
        guard PackSet.packMagic.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, 0) }) == PackSet.packMagic.count else {
            close(fd)
            throw KbuildError.syscall("pwrite", name, verb: "write a pack")
        }
    }

    deinit {
        close(fd)
    }

    var isEmpty: Bool { state.withLock { $0.entries.isEmpty } }

    /// Appends one object's stored form (header, then payload parts).
    func append(_ kid: KID, parts: [UnsafeRawBufferPointer]) throws {
        let length = parts.reduce(0) { $0 + $1.count }
        guard length < Int(UInt32.max) else { throw KbuildError(.invalidArgument, "failed to pack object \(kid): \(length) bytes is too large for a pack entry") }
        let offset = state.withLock { s -> UInt64 in
            defer { s.end += UInt64(length) }
            return s.end
        }
        var at = offset
        for part in parts {
            var done = 0
            while done < part.count {
                let n = pwrite(fd, part.baseAddress! + done, part.count - done, off_t(at) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    state.withLock { $0.failed = true }
                    throw KbuildError.syscall("pwrite", "\(dir)/\(Keg.stagingPrefix)\(name).pack", verb: "write object \(kid)")
                }
                done += n
            }
            at += UInt64(part.count)
        }
        state.withLock { $0.entries.append((kid, offset, UInt32(length))) }
    }

    /// Writes the index beside the pack; returns the temporary paths and the final ones.
    func finish() throws -> [(tmp: String, final: String)] {
        let (entries, failed) = state.withLock { ($0.entries.sorted { $0.kid < $1.kid }, $0.failed) }
        guard !failed else { throw KbuildError(.io, "failed to write pack \(name): an object failed to write") }
        var index = PackSet.indexMagic
        index.appendLE(UInt32(entries.count))
        for e in entries {
            e.kid.appendRaw(to: &index)
            index.appendLE(e.offset)
            index.appendLE(e.length)
        }
        index += KID(hashing: index).rawBytes
        let tmpIndex = "\(dir)/\(Keg.stagingPrefix)\(name).idx"
        let ifd = open(tmpIndex, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o444)
        guard ifd >= 0 else { throw KbuildError.syscall("open", tmpIndex, verb: "write a pack index") }
        let ok = index.withUnsafeBytes { Keg.writeAll(ifd, $0) }
        close(ifd)
        guard ok else {
            unlink(tmpIndex)
            throw KbuildError.syscall("write", tmpIndex, verb: "write a pack index")
        }
        // The pack first, its index last: the index's appearance makes the pack visible.
        return [("\(dir)/\(Keg.stagingPrefix)\(name).pack", "\(dir)/\(name).pack"), (tmpIndex, "\(dir)/\(name).idx")]
    }

    func discard() {
        unlink("\(dir)/\(Keg.stagingPrefix)\(name).pack")
        unlink("\(dir)/\(Keg.stagingPrefix)\(name).idx")
    }
}
