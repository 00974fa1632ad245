public import KbuildCore
public import Foundation

/// Where records live: immutable JSON blobs named by their KID. The Keg is
/// one (`extension Keg: RecordContent`); a client over HTTP is another. Refs
/// name records; records never change, so any copy is as good as another.
public protocol RecordContent: Sendable {
    /// Stores `bytes` and returns their KID.
    func putRecordBytes(_ bytes: [UInt8]) async throws -> KID
    /// The bytes of `kid`, refusing anything over `limit` bytes.
    func recordBytes(_ kid: KID, limit: Int) async throws -> [UInt8]
    /// Stores a finished log (a release phase's output) as one blob and returns its KID.
    func putLog(path: String) async throws -> KID
}

/// A local store of records that can say whether it holds one (the Keg): a
/// node's copy of the records it read from the control plane.
public protocol RecordCache: Sendable {
    func hasRecord(_ kid: KID) -> Bool
}

/// Where records are kept beside a machine's own Keg so that they live with
/// the state (etcd, when the state is there): a control plane that lost its
/// disk, or one that never had the record, reads it back from here.
public protocol RecordReplica: Sendable {
    /// The largest record it keeps (larger ones stay in the Keg only).
    var maxRecordBytes: Int { get }
    /// Keeps `bytes` under `kid` (their hash); keeping one twice is no change.
    func putRecord(_ kid: KID, _ bytes: [UInt8]) async throws
    /// The bytes kept under `kid`, or nil.
    func record(_ kid: KID) async throws -> [UInt8]?
}

/// The one record codec: every record is canonical JSON (sorted keys, no
/// escaped slashes, ISO 8601 dates), so the same record has the same KID on
/// every machine.
public enum Records {
    /// The largest record read (a record is a few KB; a release list is refs, not one record).
    public static let maxBytes = 16 << 20

    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }

    public static func encode(_ value: some Encodable) throws -> [UInt8] {
        Array(try encoder().encode(value))
    }

    /// Decodes `bytes` (the object `kid`) as a `what` record, or says which object is not one.
    public static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], kid: KID, what: String) throws -> T {
        do {
            return try decoder().decode(type, from: Data(bytes))
        } catch {
            throw KbuildError(.corrupt, "object \(kid) is not a \(what) record: \(error)")
        }
    }

    public static func put(_ value: some Encodable, in content: some RecordContent) async throws -> KID {
        try await content.putRecordBytes(try encode(value))
    }

    public static func get<T: Decodable>(_ type: T.Type, _ kid: KID, from content: some RecordContent, what: String) async throws -> T {
        try decode(type, try await content.recordBytes(kid, limit: maxBytes), kid: kid, what: what)
    }
}
