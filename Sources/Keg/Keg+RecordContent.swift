public import KbuildCore
public import KbuildState

/// The Keg holds records as plain blobs.
extension Keg: RecordContent, RecordCache {
    public func hasRecord(_ kid: KID) -> Bool { contains(kid) }
    public func putRecordBytes(_ bytes: [UInt8]) throws -> KID { try putBlob(bytes) }
    public func putLog(path: String) throws -> KID { try put(path: path) }
    public func recordBytes(_ kid: KID, limit: Int) throws -> [UInt8] { try logicalBytes(kid, maxWhole: UInt64(limit)) }
}
