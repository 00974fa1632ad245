public import KbuildCore
public import KbuildState

/// The Keg holds records as plain blobs; with a replica (etcd), each record
/// is kept there too, and one the Keg lacks is read back from it, checked
/// against its KID and kept.
extension Keg: RecordContent, RecordCache {
    public func hasRecord(_ kid: KID) -> Bool { contains(kid) }

    public func putRecordBytes(_ bytes: [UInt8]) async throws -> KID {
        let kid = try putBlob(bytes)
        if let replica = records, bytes.count <= replica.maxRecordBytes { try await replica.putRecord(kid, bytes) }
        return kid
    }

    public func putLog(path: String) throws -> KID { try put(path: path) }

    public func recordBytes(_ kid: KID, limit: Int) async throws -> [UInt8] {
        if let replica = records, !contains(kid) {
            guard let bytes = try await replica.record(kid) else {
                throw KbuildError(.notFound, "record \(kid.short) is neither in this machine's Keg nor in the state")
            }
            guard bytes.count <= limit else { throw KbuildError(.tooLarge, "record \(kid.short) is over \(limit) bytes") }
            guard KID(hashing: bytes) == kid else { throw KbuildError(.corrupt, "the state holds record \(kid.short) with bytes of another hash") }
            _ = try putBlob(bytes)
            return bytes
        }
        return try logicalBytes(kid, maxWhole: UInt64(limit))
    }
}
