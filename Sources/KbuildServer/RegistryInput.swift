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

    /// One descriptor of a pushed manifest, as it claims to be.
    struct Descriptor: Equatable, Decodable {
        var digest: String?
        var size: Int64?
        /// It names a manifest (an index's entry), not a config or a layer.
        var isManifest = false

        enum CodingKeys: String, CodingKey { case digest, size }
    }

    /// A manifest or an index as kbuild reads every manifest: with
    /// JSONDecoder, as `ImageStore` does, so the push check and every later
    /// reader see the same values even when a key is given twice.
    private struct Shape: Decodable {
        var schemaVersion: Int?
        var config: Descriptor?
        var layers: [Descriptor]?
        var manifests: [Descriptor]?
    }

    /// The descriptors of a pushed manifest or index (config, layers,
    /// manifests), or nil when it is not schemaVersion 2 JSON.
    static func manifestDescriptors(_ body: [UInt8]) -> [Descriptor]? {
        guard let shape = try? JSONDecoder().decode(Shape.self, from: Data(body)), shape.schemaVersion == 2 else { return nil }
        let manifests = (shape.manifests ?? []).map { d in
            var d = d
            d.isManifest = true
            return d
        }
        return (shape.config.map { [$0] } ?? []) + (shape.layers ?? []) + manifests
    }
}
