public import KbuildCore
public import KbuildState
import Foundation

/// Records kept in etcd beside each control plane's Keg (`kbuild/record/<kid>`),
/// so losing a control plane's disk loses no state and every control plane
/// reads what another wrote. A record is written once (a txn that puts it only
/// if absent, so writing it again moves no revision).
public struct EtcdRecords: RecordReplica {
    public let etcd: EtcdClient
    public let keys: EtcdKeys
    /// Under etcd's default request limit (1.5 MiB) with room for the txn around it.
    public var maxRecordBytes: Int { 1 << 20 }

    public init(etcd: EtcdClient, keys: EtcdKeys = EtcdKeys()) {
        self.etcd = etcd
        self.keys = keys
    }

    public func putRecord(_ kid: KID, _ bytes: [UInt8]) async throws {
        let key = keys.record(kid)
        _ = try await etcd.txn(.init(compare: [.createRevision(key, is: 0)], success: [.put(.init(key: key, value: Data(bytes)))]))
    }

    public func record(_ kid: KID) async throws -> [UInt8]? {
        try await etcd.range(.init(key: keys.record(kid))).all.first.map { Array($0.bytes) }
    }
}
