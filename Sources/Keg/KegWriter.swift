public import KbuildCore
import Foundation
import CKbuild
import Synchronization

/// Writes a batch of objects so that none is visible before it is durable.
///
/// A batch goes into one pack (`PackSet`): objects are appended to a
/// `.tmp-…` pack file as they come, and `commit()` writes the pack's index,
/// flushes the pack and its index (fsync), renames the pack and then its index
/// into `keg/packs` (the index's name makes the pack visible), and flushes the
/// directory. (Not `syncfs`: that would also wait for every other writer's
/// dirty pages on the filesystem.)
/// A writer made with `loose: true` (one object, as `putBlob`) stages a
/// `.tmp-…` file beside the object's final name in `keg/objects` instead and
/// renames it. A writer that is dropped or aborted unlinks what it staged; a
/// process killed mid-write leaves only `.tmp-…` files, which `gc` sweeps and
/// every reader ignores.
///
/// Safe to use from several threads at once (`put` ingests files in parallel).
public final class KegWriter: Sendable {
    let keg: Keg
    private struct State {
        var staged: [(tmp: String, final: String)] = []
        var stagedKIDs: Set<KID> = []
        var finished = false
        var bytesWritten: UInt64 = 0
    }
    private let state = Mutex(State())
    /// The pack this batch goes into (nil: loose files), made on the first object.
    private let pack: Mutex<PackBuilder?> = Mutex(nil)
    private let loose: Bool
    /// Unique in this process, across writers; with the pid and a random
    /// per-process tag (pids repeat, e.g. pid 1 in every container) it names a staged file.
    private static let sequence = Atomic<Int>(0)
    private static let processTag = String(UInt64.random(in: 0...UInt64.max), radix: 36)

    init(keg: Keg, loose: Bool) {
        self.keg = keg
        self.loose = loose
    }

    deinit { abort() }

    /// Bytes written to disk so far (after compression).
    public var bytesWritten: UInt64 { state.withLock { $0.bytesWritten } }

    /// Whether the object is stored (then freshened, see `Keg.freshen`) or staged in this batch.
    public func has(_ kid: KID) -> Bool {
        state.withLock { $0.stagedKIDs.contains(kid) } || keg.freshen(kid)
    }

    /// Stages the object unless it is already stored or staged. `bytes` must
    /// hash to `kid`; chunked files pass their record payload instead.
    func add(_ kid: KID, kind: ObjectKind, bytes: UnsafeRawBufferPointer, logicalSize: UInt64? = nil, compressor: Zstd.Context?) throws {
        if has(kid) { return }
        var header = ObjectHeader(kind: kind, encoding: .raw, logicalSize: logicalSize ?? UInt64(bytes.count))
        var compressed: [UInt8]?
        if let compressor, kind != .chunkedFile {
            compressed = Zstd.compress(bytes, context: compressor.pointer)
            if compressed != nil { header.encoding = .zstd }
        }
        let head = header.encoded()
        if !loose {
            // Claimed before it is written, so parallel ingesters append it once.
            let first = state.withLock { s -> Bool in
                guard !s.finished, s.stagedKIDs.insert(kid).inserted else { return false }
                s.bytesWritten += UInt64(head.count + (compressed?.count ?? bytes.count))
                return true
            }
            guard first else { return }
            let builder = try pack.withLock { p -> PackBuilder in
                if let p { return p }
                let made = try PackBuilder(dir: keg.packsPath)
                p = made
                return made
            }
            try head.withUnsafeBytes { h in
                if let compressed {
                    try compressed.withUnsafeBytes { try builder.append(kid, parts: [h, $0]) }
                } else {
                    try builder.append(kid, parts: [h, bytes])
                }
            }
            return
        }
        // Staged beside its final name (as git does): renames stay within one
        // directory, and parallel writers do not queue on one directory's lock.
        let final = keg.objectPath(kid)
        let tmp = String(final.dropLast(62)) + Keg.stagingPrefix + "\(getpid())-\(KegWriter.processTag)-\(KegWriter.sequence.wrappingAdd(1, ordering: .relaxed).newValue)"
        var fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o444)
        if fd < 0 && errno == ENOENT {
            try Keg.makeParent(of: tmp)
            fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o444)
        }
        guard fd >= 0 else { throw KbuildError.syscall("open", tmp, verb: "write object \(kid)") }
        var ok = head.withUnsafeBytes { Keg.writeAll(fd, $0) }
        if ok {
            if let compressed {
                ok = compressed.withUnsafeBytes { Keg.writeAll(fd, $0) }
            } else {
                ok = Keg.writeAll(fd, bytes)
            }
        }
        let err = errno
        close(fd)
        guard ok else {
            unlink(tmp)
            throw KbuildError.syscall("write", tmp, errno: err, verb: "write object \(kid)")
        }
        let written = UInt64(head.count + (compressed?.count ?? bytes.count))
        let duplicate = state.withLock { s -> Bool in
            if s.stagedKIDs.contains(kid) { return true }
            s.stagedKIDs.insert(kid)
            s.staged.append((tmp, final))
            s.bytesWritten += written
            return false
        }
        if duplicate { unlink(tmp) }
    }

    func add(_ kid: KID, kind: ObjectKind, bytes: [UInt8], compressor: Zstd.Context?) throws {
        try bytes.withUnsafeBytes { (raw) in try add(kid, kind: kind, bytes: raw, compressor: compressor) }
    }

    /// Makes every staged object durable and visible.
    public func commit() throws {
        var staged = state.withLock { s -> [(tmp: String, final: String)] in
            s.finished = true
            defer { s.staged = [] }
            return s.staged
        }
        if let builder = pack.withLock({ p -> PackBuilder? in defer { p = nil }; return p }) {
            do {
                staged += try builder.finish()
            } catch {
                builder.discard()
                throw error
            }
        }
        guard !staged.isEmpty else { return }
        try flush(staged.map(\.tmp), verb: "commit objects")
        for (i, entry) in staged.enumerated() {
            if rename(entry.tmp, entry.final) != 0 {
                let err = errno
                for rest in staged[i...] { unlink(rest.tmp) }
                throw KbuildError.syscall("rename", entry.final, errno: err, verb: "commit object")
            }
        }
        try flush(Set(staged.map { ($0.final as NSString).deletingLastPathComponent }).sorted(), verb: "commit objects")
        keg.packs.rescanIfChanged(force: true)
    }

    /// Drops everything staged and not yet committed.
    public func abort() {
        let staged = state.withLock { s -> [(tmp: String, final: String)] in
            s.finished = true
            defer { s.staged = [] }
            return s.staged
        }
        for entry in staged { unlink(entry.tmp) }
        pack.withLock { p in
            p?.discard()
            p = nil
        }
    }

    /// fsync of each file or directory named: what this batch wrote, and no one else's.
    private func flush(_ paths: [String], verb: String) throws {
        for path in paths {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw KbuildError.syscall("open", path, verb: verb) }
            defer { close(fd) }
            guard fsync(fd) == 0 else { throw KbuildError.syscall("fsync", path, verb: verb) }
        }
    }
}

extension Keg {
    /// A new batch of writes, packed. Commit it, or drop it to discard what it staged.
    public func writer() -> KegWriter { KegWriter(keg: self, loose: false) }

    /// Stores one blob and returns its KID (one durable write).
    @discardableResult
    public func putBlob(_ bytes: [UInt8]) throws -> KID {
        let kid = KID(hashing: bytes)
        let w = KegWriter(keg: self, loose: true)
        try w.add(kid, kind: .blob, bytes: bytes, compressor: Zstd.Context())
        try w.commit()
        return kid
    }
}
