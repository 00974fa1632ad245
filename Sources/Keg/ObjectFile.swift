import KbuildCore

/// The on-disk form of one object: a 16-byte header, then the payload.
///
///     0  "KEG1"
///     4  kind (ObjectKind)
///     5  encoding: 0 raw, 1 zstd
///     6  reserved (0, 0)
///     8  logical size, u64 little-endian: the length of the bytes the KID hashes
///     16 payload: the logical bytes (raw or zstd), or for a chunked file the
///        `BoundRecord` (so is a tree archive's)
struct ObjectHeader: Equatable {
    static let size = 16
    static let magic: [UInt8] = Array("KEG1".utf8)

    enum Encoding: UInt8 {
        case raw = 0
        case zstd = 1
    }

    var kind: ObjectKind
    var encoding: Encoding
    var logicalSize: UInt64

    func encoded() -> [UInt8] {
        var out = ObjectHeader.magic
        out.append(kind.rawValue)
        out.append(encoding.rawValue)
        out.append(contentsOf: [0, 0])
        out.appendLE(logicalSize)
        return out
    }

    init(kind: ObjectKind, encoding: Encoding, logicalSize: UInt64) {
        self.kind = kind
        self.encoding = encoding
        self.logicalSize = logicalSize
    }

    init(decoding bytes: UnsafeRawBufferPointer, kid: KID) throws {
        guard bytes.count >= ObjectHeader.size,
              bytes.prefix(4).elementsEqual(ObjectHeader.magic),
              let kind = ObjectKind(rawValue: bytes[4]),
              let encoding = Encoding(rawValue: bytes[5])
        else { throw KbuildError(.corrupt, "failed to read object \(kid): bad header") }
        self.kind = kind
        self.encoding = encoding
        self.logicalSize = bytes.loadLE(at: 8)
    }
}

/// The payload of an object that stands for another (a chunked file for its
/// chunk index root, a tree archive for its tree): the named KID, then a
/// binding hash of (tag, the object's own KID, the named KID), so a damaged
/// record cannot point at other bytes. 64 bytes.
enum BoundRecord {
    static let size = 64
    static let chunkedFile = "kbuild-chunked-file\0"
    static let treeArchive = "kbuild-tree-archive-v1\0"

    static func binding(_ tag: String, object: KID, named: KID) -> KID {
        var bytes = Array(tag.utf8)
        object.appendRaw(to: &bytes)
        named.appendRaw(to: &bytes)
        return KID(hashing: bytes)
    }

    static func encoded(_ tag: String, object: KID, named: KID) -> [UInt8] {
        var out = [UInt8]()
        named.appendRaw(to: &out)
        binding(tag, object: object, named: named).appendRaw(to: &out)
        return out
    }

    /// The named KID; `what` names the record in the error ("chunked-file record").
    static func decoded(_ tag: String, _ payload: [UInt8], object: KID, what: String) throws -> KID {
        guard payload.count == size,
              let named = KID(rawBytes: payload[0..<32]),
              let binding = KID(rawBytes: payload[32..<64]),
              binding == self.binding(tag, object: object, named: named)
        else { throw KbuildError(.corrupt, "failed to read object \(object): \(what) does not match its KID") }
        return named
    }
}

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        var v = value.littleEndian
        Swift.withUnsafeBytes(of: &v) { append(contentsOf: $0) }
    }
}

extension UnsafeRawBufferPointer {
    func loadLE<T: FixedWidthInteger>(at offset: Int, as: T.Type = T.self) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension Array where Element == UInt8 {
    func loadLE<T: FixedWidthInteger>(at offset: Int, as: T.Type = T.self) -> T {
        withUnsafeBytes { $0.loadLE(at: offset) }
    }
}
