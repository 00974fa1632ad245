import CZstd
import KbuildCore

/// Chunks and small objects are compressed at rest with zstd: it changes what
/// is on disk, never a KID. Level 1: decompression runs at well over 1 GB/s and
/// compression keeps up with first ingests.
enum Zstd {
    static let level: Int32 = -1

    /// The compressed bytes, or nil when compression would not save at least 1/8.
    static func compress(_ input: UnsafeRawBufferPointer, context: OpaquePointer) -> [UInt8]? {
        guard input.count >= 64 else { return nil }
        let bound = ZSTD_compressBound(input.count)
        var n = 0
        // Not zero-filled first: zstd writes every byte it reports.
        let out = [UInt8](unsafeUninitializedCapacity: bound) { dst, count in
            n = ZSTD_compressCCtx(context, dst.baseAddress, bound, input.baseAddress, input.count, level)
            count = ZSTD_isError(n) == 0 ? n : 0
        }
        guard ZSTD_isError(n) == 0, n < input.count - input.count / 8 else { return nil }
        return out
    }

    /// Decompresses exactly `size` bytes into `output`.
    static func decompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer, kid: KID) throws {
        let n = ZSTD_decompress(output.baseAddress, output.count, input.baseAddress, input.count)
        guard ZSTD_isError(n) == 0, n == output.count else {
            let reason = ZSTD_isError(n) != 0 ? String(cString: ZSTD_getErrorName(n)) : "\(n) bytes, want \(output.count)"
            throw KbuildError(.corrupt, "failed to decompress object \(kid): \(reason)")
        }
    }

    /// A compression context owned by one thread.
    final class Context {
        let pointer: OpaquePointer
        init() { pointer = ZSTD_createCCtx() }
        deinit { ZSTD_freeCCtx(pointer) }
    }
}
