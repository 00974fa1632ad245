import KbuildCore
import CKbuild
import Foundation
import Synchronization

/// SHA-256 that can feed a second hash with the same bytes in one pass
/// (interleaved with the x86 SHA extensions, `kb_sha256_update2`).
struct DualHasher {
    /// x86 SHA extensions present (and not turned off with KBUILD_NO_SHA_NI=1, for tests).
    static let interleaved = kb_sha256_hw() == 1 && ProcessInfo.processInfo.environment["KBUILD_NO_SHA_NI"] != "1"

    private var context = kb_sha256()
    private var portable = IncrementalKID()

    init() { kb_sha256_init(&context) }

    /// The KID of `bytes`: with the x86 SHA extensions, a little faster than `KID(hashing:)`.
    static func kid(of bytes: UnsafeRawBufferPointer) -> KID {
        var hasher = DualHasher()
        hasher.update(bytes)
        return hasher.finalize()
    }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if DualHasher.interleaved {
            kb_sha256_update(&context, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count)
        } else {
            portable.update(bytes)
        }
    }

    /// Feeds `bytes` to this hash and to `other`.
    mutating func update(_ bytes: UnsafeRawBufferPointer, also other: inout DualHasher) {
        guard bytes.count > 0 else { return }
        if DualHasher.interleaved {
            let p = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
            kb_sha256_update2(&context, p, bytes.count, &other.context, p, bytes.count)
        } else {
            portable.update(bytes)
            other.portable.update(bytes)
        }
    }

    mutating func finalize() -> KID {
        if DualHasher.interleaved {
            var digest = [UInt8](repeating: 0, count: 32)
            kb_sha256_final(&context, &digest)
            return KID(rawBytes: digest)!
        }
        return portable.finalize()
    }
}

/// The whole-file hash of a streamed file, and the KIDs of its chunks.
struct FileHasher {
    private var whole = DualHasher()

    /// The KIDs of the chunks `cuts` of `buffer`, feeding the whole-file hash
    /// with them; `fresh` is what was read in this block (the portable path
    /// hashes it, since a carried-over tail is not yet a chunk).
    mutating func hash(_ cuts: [(start: Int, count: Int)], in buffer: UnsafeRawBufferPointer, fresh: UnsafeRawBufferPointer) -> [KID] {
        if DualHasher.interleaved {
            // The whole-file hash and each chunk's in one pass (`kb_sha256_update2`).
            return cuts.map { cut in
                var chunk = DualHasher()
                whole.update(UnsafeRawBufferPointer(rebasing: buffer[cut.start..<cut.start + cut.count]), also: &chunk)
                return chunk.finalize()
            }
        }
        // Portable: the whole-file hash as one job beside the chunk jobs.
        let found = Mutex([KID?](repeating: nil, count: cuts.count))
        // Only job 0 touches the whole-file hasher; parallelFor joins before we read it back.
        let hasher = UnsafeSendable(UnsafeMutablePointer<DualHasher>.allocate(capacity: 1))
        hasher.value.initialize(to: whole)
        defer { hasher.value.deallocate() }
        try? parallelFor(cuts.count + 1) { job in
            if job == 0 { hasher.value.pointee.update(fresh); return }
            let (start, n) = cuts[job - 1]
            let kid = KID(hashing: UnsafeRawBufferPointer(rebasing: buffer[start..<start + n]))
            found.withLock { $0[job - 1] = kid }
        }
        whole = hasher.value.move()
        return found.withLock { $0.map { $0! } }
    }

    mutating func finalize() -> KID { whole.finalize() }
}
