import KbuildCore

/// The index of a chunked file is a tree, not a flat list: entries are grouped
/// into nodes at content-defined boundaries (a chunk whose KID ends in six zero
/// bits closes a node), so an edit rewrites one leaf and the nodes above it,
/// and every other node is shared with the previous version, as git shares
/// unchanged subtrees.
///
///     "KIX1" u8 level, 3 zero bytes, u32 count, then count × (32-byte KID, u64 size)
///
/// Level 0 entries are chunks (blobs); level n entries are nodes of level n-1.
struct ChunkIndexNode: Equatable {
    struct Entry: Equatable {
        var kid: KID
        var size: UInt64
    }

    var level: UInt8
    var entries: [Entry]

    /// About 64 entries a node on average, never more than 256.
    static let boundaryMask: UInt64 = 63
    static let maxEntries = 256

    static func isBoundary(_ kid: KID) -> Bool { kid.w3 & boundaryMask == 0 }

    var totalSize: UInt64 { entries.reduce(0) { $0 + $1.size } }

    func encoded() -> [UInt8] {
        var out = Array("KIX1".utf8)
        out.append(level)
        out.append(contentsOf: [0, 0, 0])
        out.appendLE(UInt32(entries.count))
        out.reserveCapacity(out.count + entries.count * 40)
        for e in entries {
            e.kid.appendRaw(to: &out)
            out.appendLE(e.size)
        }
        return out
    }

    init(level: UInt8, entries: [Entry]) {
        self.level = level
        self.entries = entries
    }

    init(decoding bytes: [UInt8], kid: KID) throws {
        guard bytes.count >= 12, bytes[0..<4].elementsEqual("KIX1".utf8) else {
            throw KbuildError(.corrupt, "failed to read chunk index \(kid): bad magic")
        }
        let count = Int(bytes.loadLE(at: 8, as: UInt32.self))
        guard count > 0, bytes.count == 12 + count * 40 else {
            throw KbuildError(.corrupt, "failed to read chunk index \(kid): \(bytes.count) bytes for \(count) entries")
        }
        level = bytes[4]
        entries = (0..<count).map { i in
            let at = 12 + i * 40
            return Entry(kid: KID(rawBytes: bytes[at..<at + 32])!, size: bytes.loadLE(at: at + 32))
        }
    }

    /// Splits a level's entries into nodes at content-defined boundaries.
    static func group(_ entries: [Entry], level: UInt8) -> [ChunkIndexNode] {
        var nodes: [ChunkIndexNode] = []
        var current: [Entry] = []
        for e in entries {
            current.append(e)
            if isBoundary(e.kid) || current.count == maxEntries {
                nodes.append(ChunkIndexNode(level: level, entries: current))
                current = []
            }
        }
        if !current.isEmpty { nodes.append(ChunkIndexNode(level: level, entries: current)) }
        return nodes
    }
}
