public import KbuildCore
import CKbuild
import Synchronization

/// A file whose bytes arrive over time (a registry blob upload), stored as
/// `put` stores a file, while it arrives: the same chunks, the same index, the
/// same KID, but no second pass over a temporary copy. Nothing is visible
/// until `commit`, after the caller has checked the KID; `abort` (or dropping
/// it) leaves nothing behind. Used by one task at a time.
public final class KegUpload {
    let keg: Keg
    let writer: KegWriter
    let ingest: Ingest
    private var buffer: [UInt8] = []
    /// Bytes at the start of `buffer` carried over from the last block (already counted).
    private var carried = 0
    private var hasher = FileHasher()
    private var chunks: [ChunkIndexNode.Entry] = []
    private var chunked = false
    private var sealed: KID?
    /// Bytes received so far.
    public private(set) var size: UInt64 = 0

    public init(keg: Keg) {
        self.keg = keg
        writer = keg.writer()
        ingest = Ingest(keg: keg, writer: writer, progress: nil)
    }

    deinit { writer.abort() }

    /// Takes the next bytes; a full block is chunked, hashed and stored at once.
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(sealed == nil, "append after seal")
        buffer.append(contentsOf: bytes)
        size += UInt64(bytes.count)
        if buffer.count >= Ingest.blockSize + Int(Keg.chunkParams.max_size) { try process(eof: false) }
    }

    /// Ends the bytes and returns their KID (nothing is visible yet).
    public func seal() throws -> KID {
        if let sealed { return sealed }
        let kid: KID
        if !chunked && buffer.count < Keg.chunkingThreshold {
            kid = KID(hashing: buffer)
            try writer.add(kid, kind: .blob, bytes: buffer, compressor: Zstd.Context())
        } else {
            try process(eof: true)
            kid = hasher.finalize()
        }
        sealed = kid
        return kid
    }

    /// Makes the sealed file durable and visible.
    public func commit() throws {
        guard let kid = sealed else { throw KbuildError(.invalidArgument, "failed to store an upload: it is not sealed") }
        if chunked && !keg.freshen(kid) {
            let w = ingest.pool.take()
            defer { ingest.pool.give(w) }
            try ingest.storeIndex(file: kid, size: size, chunks: chunks, worker: w)
        }
        try writer.commit()
    }

    public func abort() { writer.abort() }

    /// Cuts what is buffered into chunks (keeping an unfinished last one unless
    /// `eof`), hashes them into the file's hash, and stores them on every core.
    private func process(eof: Bool) throws {
        chunked = true
        try buffer.withUnsafeBytes { raw in
            var params = Keg.chunkParams
            var cuts: [(start: Int, count: Int)] = []
            var at = 0
            while at < raw.count {
                let n = kb_cdc_cut(raw.baseAddress!.assumingMemoryBound(to: UInt8.self) + at, raw.count - at, &params)
                if at + n == raw.count && !eof && n < Int(params.max_size) { break }
                cuts.append((at, n))
                at += n
            }
            let kids = hasher.hash(cuts, in: raw, fresh: UnsafeRawBufferPointer(rebasing: raw[carried...]))
            let view = UnsafeSendable(raw)
            try parallelFor(cuts.count) { i in
                let w = ingest.pool.take()
                defer { ingest.pool.give(w) }
                let (start, n) = cuts[i]
                try writer.add(kids[i], kind: .blob, bytes: UnsafeRawBufferPointer(rebasing: view.value[start..<start + n]), compressor: w.zstd)
            }
            for (i, cut) in cuts.enumerated() { chunks.append(.init(kid: kids[i], size: UInt64(cut.count))) }
            carried = raw.count - at
        }
        buffer.removeFirst(buffer.count - carried)
    }
}
