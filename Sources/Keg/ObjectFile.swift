import KbuildCore

/// The on-disk form of one object: a 16-byte header, then the payload.
///
///     0  "KEG1"
///     4  kind (ObjectKind)
///     5  encoding: 0 raw, 1 zstd
///     6  reserved (0, 0)
///     8  logical size, u64 little-endian: the length of the bytes the KID hashes
///     16 payload: the logical bytes (raw or zstd), or for a chunked file the
///        `ChunkedFileRecord`
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

/// The payload of a chunked file: its chunk index root and a binding that ties
/// the root to the file's KID, so a damaged record cannot point at other bytes.
struct ChunkedFileRecord: Equatable {
    static let size = 64
    var root: KID

    static func binding(file: KID, root: KID) -> KID {
        var bytes = Array("kbuild-chunked-file\0".utf8)
        file.appendRaw(to: &bytes)
        root.appendRaw(to: &bytes)
        return KID(hashing: bytes)
    }

    func encoded(file: KID) -> [UInt8] {
        var out = [UInt8]()
        root.appendRaw(to: &out)
        ChunkedFileRecord.binding(file: file, root: root).appendRaw(to: &out)
        return out
    }

    init(root: KID) { self.root = root }

    init(decoding payload: [UInt8], file: KID) throws {
        guard payload.count == ChunkedFileRecord.size,
              let root = KID(rawBytes: payload[0..<32]),
              let binding = KID(rawBytes: payload[32..<64]),
              binding == ChunkedFileRecord.binding(file: file, root: root)
        else { throw KbuildError(.corrupt, "failed to read object \(file): chunked-file record does not match its KID") }
        self.root = root
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
