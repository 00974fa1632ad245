public import KbuildCore
import Synchronization

/// Reads the logical bytes of one object at any offset, verifying every object
/// it touches: the whole object for a blob or tree, each chunk and index node
/// for a chunked file (whose record binds its index to its KID), each file
/// of a tree archive (whose headers follow from its verified tree; the whole
/// archive's hash was checked when it was stored, and `fsck` checks it again).
public final class ObjectReader: Sendable {
    public let kid: KID
    public let kind: ObjectKind
    public let size: UInt64
    private let keg: Keg
    private let whole: [UInt8]
    /// For a chunked file: chunk KIDs with their start offsets.
    private let chunks: [(kid: KID, start: UInt64, size: UInt64)]
    /// For a tree archive: its layout, and the reader of the member read last
    /// (a registry reads a layer 1 MiB at a time, often within one large file).
    private let archive: TreeArchive?
    private let member = Mutex<(index: Int, reader: ObjectReader)?>(nil)
    private let cached = Mutex<(index: Int, bytes: [UInt8])?>(nil)

    public init(keg: Keg, kid: KID) throws {
        self.keg = keg
        self.kid = kid
        let (header, payload) = try keg.readStored(kid)
        kind = header.kind
        size = header.logicalSize
        archive = header.kind == .treeArchive ? try keg.archive(kid, header: header, payload: payload) : nil
        if header.kind == .treeArchive {
            whole = []
            chunks = []
        } else if header.kind == .chunkedFile {
            whole = []
            var start: UInt64 = 0
            chunks = try keg.chunks(ofChunkedFile: kid).map { e in
                defer { start += e.size }
                return (e.kid, start, e.size)
            }
        } else {
            whole = try keg.decode(header: header, payload: payload, kid: kid)
            chunks = []
        }
    }

    /// Up to `maxLength` bytes from `offset` (fewer at a chunk's end; empty at the end).
    public func read(at offset: UInt64, maxLength: Int) throws -> ArraySlice<UInt8> {
        guard offset < size, maxLength > 0 else { return [] }
        if let archive {
            var out: [UInt8] = []
            out.reserveCapacity(min(maxLength, Int(size - offset)))
            let reader = { (i: Int) throws -> ObjectReader in
                if let hit = self.member.withLock({ $0?.index == i ? $0?.reader : nil }) { return hit }
                let made = try ObjectReader(keg: self.keg, kid: archive.members[i].kid!)
                self.member.withLock { $0 = (i, made) }
                return made
            }
            try archive.forEachPiece(in: offset..<min(size, offset + UInt64(maxLength)), keg: keg, reader: reader) { out.append(contentsOf: $0) }
            return out[...]
        }
        if kind != .chunkedFile {
            let end = min(size, offset + UInt64(maxLength))
            return whole[Int(offset)..<Int(end)]
        }
        var lo = 0, hi = chunks.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if chunks[mid].start <= offset { lo = mid } else { hi = mid - 1 }
        }
        let chunk = chunks[lo]
        let bytes: [UInt8]
        if let hit = cached.withLock({ $0?.index == lo ? $0?.bytes : nil }) {
            bytes = hit
        } else {
            bytes = try keg.readVerified(chunk.kid)
            guard UInt64(bytes.count) == chunk.size else {
                throw KbuildError(.corrupt, "failed to read file \(kid): chunk \(chunk.kid) is \(bytes.count) bytes, index says \(chunk.size)")
            }
            cached.withLock { $0 = (lo, bytes) }
        }
        let from = Int(offset - chunk.start)
        let to = min(bytes.count, from + maxLength)
        return bytes[from..<to]
    }

    /// Calls `body` with successive pieces of `range` (the whole object by default).
    public func forEachPiece(in range: Range<UInt64>? = nil, _ body: (ArraySlice<UInt8>) throws -> Void) throws {
        let range = range ?? 0..<size
        var at = range.lowerBound
        while at < range.upperBound {
            let piece = try read(at: at, maxLength: Int(min(range.upperBound - at, 1 << 20)))
            if piece.isEmpty { break }
            try body(piece)
            at += UInt64(piece.count)
        }
    }
}
