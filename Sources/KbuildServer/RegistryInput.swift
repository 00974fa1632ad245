import Foundation

/// What the registry reads from a request's untrusted bytes, as pure functions
/// apart from `RegistryRoutes` (Hummingbird), so that fuzz/ runs them as shipped.
enum RegistryInput {
    /// The start of an upload chunk's `Content-Range`: "start-end" (the
    /// distribution spec's form), or "bytes start-end/total"; nil when unreadable.
    static func uploadOffset(contentRange range: String) -> UInt64? {
        let text = range.hasPrefix("bytes ") ? String(range.dropFirst(6).prefix { $0 != "/" }) : range
        guard let dash = text.firstIndex(of: "-"), let start = UInt64(text[..<dash]) else { return nil }
        return start
    }

    /// The digests a pushed manifest or index names (its config, layers and
    /// manifests), or nil when it is not an image manifest or index (schemaVersion 2 JSON).
    static func manifestReferences(_ body: [UInt8]) -> [String]? {
        manifestDescriptors(body)?.compactMap(\.digest)
    }

    /// One descriptor of a pushed manifest, as it claims to be.
    struct Descriptor: Equatable {
        var digest: String?
        var size: Int64?

    }

    /// The descriptors of a pushed manifest or index (config, layers,
    /// manifests), or nil when it is not schemaVersion 2 JSON.
    static func manifestDescriptors(_ body: [UInt8]) -> [Descriptor]? {
        guard let json = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any], json["schemaVersion"] as? Int == 2 else {
            return nil
        }
        var all: [[String: Any]] = (json["config"] as? [String: Any]).map { [$0] } ?? []
        all += json["layers"] as? [[String: Any]] ?? []
        all += json["manifests"] as? [[String: Any]] ?? []
        return all.map { d in
            Descriptor(digest: d["digest"] as? String, size: (d["size"] as? NSNumber)?.int64Value)
        }
    }
}
