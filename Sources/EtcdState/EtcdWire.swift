import Foundation

/// The JSON of etcd's v3 gateway (`/v3/…`, grpc-gateway's mapping of the
/// protobuf messages), only the fields kbuild uses. The gateway's own
/// habits, measured on etcd 3.4.23: 64-bit numbers travel as strings, keys
/// and values as base64, and zero or false fields are left out (a failed
/// txn has no `succeeded`, an event that is a PUT has no `type`, an empty
/// range has no `kvs`).
enum EtcdWire {
    /// An int64 that arrives as a string (or, from other gateways, a number) and is sent as a string.
    struct Int64String: Codable, Sendable, Equatable {
        var value: Int64
        init(_ value: Int64) { self.value = value }
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self), let v = Int64(s) {
                value = v
            } else {
                value = try c.decode(Int64.self)
            }
        }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            try c.encode(String(value))
        }
    }

    struct Header: Decodable, Sendable {
        /// Unsigned 64-bit ids, kept as the strings they arrive as.
        var cluster_id: String?
        var member_id: String?
        var revision: Int64String?
        var raft_term: Int64String?
        var rev: Int64 { revision?.value ?? 0 }
    }

    struct KeyValue: Decodable, Sendable {
        var key: Data
        var create_revision: Int64String?
        var mod_revision: Int64String?
        var version: Int64String?
        var value: Data?
        var lease: Int64String?
        var createRevision: Int64 { create_revision?.value ?? 0 }
        var modRevision: Int64 { mod_revision?.value ?? 0 }
        var bytes: Data { value ?? Data() }
    }

    struct RangeRequest: Encodable, Sendable {
        var key: Data
        var range_end: Data?
        var limit: Int64String?
        var revision: Int64String?
        var sort_order: String?
        var sort_target: String?
        var keys_only: Bool?
        var count_only: Bool?
        var min_mod_revision: Int64String?
        var max_mod_revision: Int64String?
    }

    struct RangeResponse: Decodable, Sendable {
        var header: Header?
        var kvs: [KeyValue]?
        var more: Bool?
        var count: Int64String?
        var all: [KeyValue] { kvs ?? [] }
    }

    struct PutRequest: Encodable, Sendable {
        var key: Data
        var value: Data
        var lease: Int64String?
    }

    struct DeleteRangeRequest: Encodable, Sendable {
        var key: Data
        var range_end: Data?
    }

    struct Compare: Encodable, Sendable {
        var target: String
        var key: Data
        var result: String = "EQUAL"
        var mod_revision: Int64String?
        var create_revision: Int64String?
        var value: Data?
        var lease: Int64String?

        static func modRevision(_ key: Data, is rev: Int64) -> Compare {
            Compare(target: "MOD", key: key, mod_revision: Int64String(rev))
        }
        /// The key exists with this create revision (0: the key is absent).
        static func createRevision(_ key: Data, is rev: Int64) -> Compare {
            Compare(target: "CREATE", key: key, create_revision: Int64String(rev))
        }
    }

    struct RequestOp: Encodable, Sendable {
        var request_range: RangeRequest?
        var request_put: PutRequest?
        var request_delete_range: DeleteRangeRequest?
        static func range(_ r: RangeRequest) -> RequestOp { RequestOp(request_range: r) }
        static func put(_ p: PutRequest) -> RequestOp { RequestOp(request_put: p) }
        static func delete(_ key: Data) -> RequestOp { RequestOp(request_delete_range: DeleteRangeRequest(key: key)) }
    }

    struct TxnRequest: Encodable, Sendable {
        var compare: [Compare] = []
        var success: [RequestOp] = []
        var failure: [RequestOp] = []
    }

    struct ResponseOp: Decodable, Sendable {
        var response_range: RangeResponse?
    }

    struct TxnResponse: Decodable, Sendable {
        var header: Header?
        var succeeded: Bool?
        var responses: [ResponseOp]?
        var ok: Bool { succeeded ?? false }
        /// The range answers, in the order they were asked (empty when a branch had none).
        var ranges: [RangeResponse] { (responses ?? []).compactMap(\.response_range) }
    }

    struct StatusResponse: Decodable, Sendable {
        var header: Header?
        var version: String?
        var leader: String?
    }

    struct CompactionRequest: Encodable, Sendable {
        var revision: Int64String
        var physical: Bool?
    }

    struct LeaseGrantRequest: Encodable, Sendable {
        var TTL: Int64String
    }
    struct LeaseGrantResponse: Decodable, Sendable {
        var header: Header?
        var ID: Int64String?
        var TTL: Int64String?
        var error: String?
    }
    struct LeaseIDRequest: Encodable, Sendable {
        var ID: Int64String
    }
    struct LeaseKeepAliveResponse: Decodable, Sendable {
        var result: LeaseKeepAliveResult?
    }
    struct LeaseKeepAliveResult: Decodable, Sendable {
        var header: Header?
        var ID: Int64String?
        /// Absent (zero) when the lease had already expired.
        var TTL: Int64String?
    }

    struct WatchCreate: Encodable, Sendable {
        var key: Data
        var range_end: Data?
        var start_revision: Int64String?
        var progress_notify: Bool?
    }
    struct WatchRequest: Encodable, Sendable {
        var create_request: WatchCreate
    }
    struct Event: Decodable, Sendable {
        /// Absent for a PUT; "DELETE" for a delete.
        var type: String?
        var kv: KeyValue?
        var isPut: Bool { type == nil || type == "PUT" }
    }
    struct WatchResult: Decodable, Sendable {
        var header: Header?
        var created: Bool?
        var canceled: Bool?
        var compact_revision: Int64String?
        var cancel_reason: String?
        var events: [Event]?
    }
    struct WatchMessage: Decodable, Sendable {
        var result: WatchResult?
        var error: ErrorBody?
    }

    /// What the gateway answers instead of a message when a call fails.
    struct ErrorBody: Decodable, Sendable {
        var error: String?
        var message: String?
        var code: Int?
    }
}
