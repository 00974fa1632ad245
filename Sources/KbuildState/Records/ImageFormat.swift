public import KbuildCore
import Foundation

/// The OCI image format (image-spec v1.1), as kbuild writes and reads it.
/// A blob's digest is the KID of its bytes, so every part of an image is an
/// object in the Keg and an image's KID is its manifest's digest.
public enum MediaType {
    public static let manifest = "application/vnd.oci.image.manifest.v1+json"
    public static let index = "application/vnd.oci.image.index.v1+json"
    public static let config = "application/vnd.oci.image.config.v1+json"
    /// Uncompressed: chunking dedups it in the Keg, compression happens at rest and on the wire.
    public static let layer = "application/vnd.oci.image.layer.v1.tar"
    public static let layerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
}

/// The annotation on a layer descriptor naming the Keg tree the layer unpacks to.
public let treeAnnotation = "dev.kbuild.tree"

public struct Descriptor: Codable, Sendable, Equatable {
    public var mediaType: String
    public var digest: String
    public var size: Int64
    public var annotations: [String: String]?

    public init(mediaType: String, kid: KID, size: Int64, annotations: [String: String]? = nil) {
        self.mediaType = mediaType
        self.digest = kid.ociDigest
        self.size = size
        self.annotations = annotations
    }

    /// The KID this descriptor names (sha256 digests only).
    public func kid() throws -> KID {
        guard digest.hasPrefix("sha256:"), let kid = try? KID(parsing: "K-" + digest.dropFirst(7)) else {
            throw KbuildError(.invalidArgument, "unsupported digest \(digest.debugDescription): kbuild takes sha256 only")
        }
        return kid
    }
}

public struct Manifest: Codable, Sendable, Equatable {
    public var schemaVersion = 2
    public var mediaType = MediaType.manifest
    public var config: Descriptor
    public var layers: [Descriptor]
    public var annotations: [String: String]?

    public init(config: Descriptor, layers: [Descriptor], annotations: [String: String]? = nil) {
        self.config = config
        self.layers = layers
        self.annotations = annotations
    }
}

public struct ImageConfig: Codable, Sendable, Equatable {
    public struct Config: Codable, Sendable, Equatable {
        public var Env: [String]?
        public var Cmd: [String]?
        public var Entrypoint: [String]?
        public var WorkingDir: String?
        public var User: String?
        public var ExposedPorts: [String: EmptyObject]?
        public var Labels: [String: String]?

        /// `Env` as a map (`K=V` entries; a later entry wins).
        public var environment: [String: String] {
            var out: [String: String] = [:]
            for entry in Env ?? [] {
                if let eq = entry.firstIndex(of: "=") { out[String(entry[..<eq])] = String(entry[entry.index(after: eq)...]) }
            }
            return out
        }

        public init(Env: [String]? = nil, Cmd: [String]? = nil, WorkingDir: String? = nil, Labels: [String: String]? = nil) {
            self.Env = Env
            self.Cmd = Cmd
            self.WorkingDir = WorkingDir
            self.Labels = Labels
        }
    }

    public struct RootFS: Codable, Sendable, Equatable {
        public var type = "layers"
        public var diff_ids: [String]
    }

    public struct History: Codable, Sendable, Equatable {
        public var created: String?
        public var created_by: String?
    }

    public var created: String?
    public var architecture: String
    public var os: String
    public var config: Config?
    public var rootfs: RootFS
    public var history: [History]?

    /// Every image's and layer's time, the one every layer's files carry
    /// (`TreeArchive.mtime`), as Cloud Native Buildpacks do: same inputs, same KIDs.
    public static let createdTimestamp = "1980-01-01T00:00:01Z"

    public init(config: Config, diffIDs: [KID], createdBy: String) {
        self.created = ImageConfig.createdTimestamp
        self.architecture = ImageConfig.hostArchitecture
        self.os = "linux"
        self.config = config
        self.rootfs = RootFS(diff_ids: diffIDs.map(\.ociDigest))
        self.history = diffIDs.map { _ in History(created: ImageConfig.createdTimestamp, created_by: createdBy) }
    }

    /// The OCI name of this machine's architecture (GOARCH spelling).
    public static var hostArchitecture: String {
        var u = utsname()
        uname(&u)
        let machine = withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch machine {
        case "x86_64": return "amd64"
        case "aarch64": return "arm64"
        default: return machine
        }
    }
}

/// `{}` in JSON (ExposedPorts values).
public struct EmptyObject: Codable, Sendable, Equatable {
    public init() {}
}

/// JSON the same on every machine: sorted keys, no escaped slashes, no spaces.
public func canonicalJSON(_ value: some Encodable) throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return Array(try encoder.encode(value))
}
