public import KbuildCore
public import Keg
import Foundation
public import KbuildState

/// OCI images in the Keg: layers made from trees, configs and manifests as
/// blobs. An image's KID is its manifest's digest.
public struct ImageStore: Sendable {
    public let keg: Keg

    public init(keg: Keg) {
        self.keg = keg
    }

    /// Stores a directory as a tree and as an OCI layer: its reproducible tar
    /// (`TreeArchive`, kept by the Keg as a recipe naming the tree), with the
    /// tree named in the descriptor so that nodes can check it out directly.
    public func putLayer(directory: String, skipSpecialFiles: Bool = true, dropSetID: Bool = false,
                         maxBytes: UInt64? = nil) throws -> (tree: KID, layer: Descriptor) {
        let stored = try keg.putWithArchive(directory: directory, skipSpecialFiles: skipSpecialFiles, dropSetID: dropSetID, maxBytes: maxBytes)
        return (stored.tree, Descriptor(mediaType: MediaType.layer, kid: stored.archive, size: Int64(stored.archiveSize),
                                        annotations: [treeAnnotation: stored.tree.description]))
    }

    /// Stores the config and the manifest of an image made of `layers` (bottom first).
    public func putImage(layers: [Descriptor], config: ImageConfig.Config, createdBy: String,
                         annotations: [String: String]? = nil) throws -> KID {
        let image = ImageConfig(config: config, diffIDs: try layers.map { try $0.kid() }, createdBy: createdBy)
        let configBytes = try canonicalJSON(image)
        let configKID = try keg.putBlob(configBytes)
        let manifest = Manifest(config: Descriptor(mediaType: MediaType.config, kid: configKID, size: Int64(configBytes.count)),
                                layers: layers, annotations: annotations)
        return try keg.putBlob(try canonicalJSON(manifest))
    }

    public func manifest(_ kid: KID) throws -> Manifest {
        let bytes = try keg.logicalBytes(kid, maxWhole: 4 << 20)
        do {
            let manifest = try JSONDecoder().decode(Manifest.self, from: Data(bytes))
            guard manifest.schemaVersion == 2, manifest.mediaType == MediaType.manifest else {
                throw KbuildError(.invalidArgument, "object \(kid) is not an OCI image manifest (media type \(manifest.mediaType))")
            }
            return manifest
        } catch let error as KbuildError {
            throw error
        } catch {
            throw KbuildError(.invalidArgument, "object \(kid) is not an OCI image manifest: \(error)")
        }
    }

    public func config(of manifest: Manifest) throws -> ImageConfig {
        let kid = try manifest.config.kid()
        do {
            return try JSONDecoder().decode(ImageConfig.self, from: Data(try keg.logicalBytes(kid, maxWhole: 4 << 20)))
        } catch let error as KbuildError {
            throw error
        } catch {
            throw KbuildError(.corrupt, "image config \(kid) does not decode: \(error)")
        }
    }

    /// What makes an image whole on another machine, children first: each layer's archive (its tree
    /// goes with it), the config, the manifest. What `KegUpstream.publish` is given.
    public func objectRoots(_ image: KID) throws -> [KID] {
        let manifest = try manifest(image)
        return try manifest.layers.map { try $0.kid() } + [try manifest.config.kid(), image]
    }

    /// The Keg trees of an image's layers, bottom first.
    public func layerTrees(_ manifest: Manifest) throws -> [KID] {
        try manifest.layers.map { layer in
            guard let text = layer.annotations?[treeAnnotation] else {
                throw KbuildError(.invalidArgument, "layer \(layer.digest) has no \(treeAnnotation) annotation (not unpacked into the Keg yet)")
            }
            return try KID(parsing: text)
        }
    }

    /// Writes an OCI image layout (oci-layout, index.json, blobs/sha256/…) at
    /// `directory`, which must not exist; built beside it and renamed into place.
    public func exportLayout(_ kid: KID, to directory: String, tag: String?) throws {
        let manifest = try manifest(kid)
        var st = stat()
        guard lstat(directory, &st) != 0 else {
            throw KbuildError(.conflict, "failed to export \(kid) to \(directory): it already exists")
        }
        let tmp = directory + ".tmp-\(getpid())"
        let blobs = tmp + "/blobs/sha256"
        do {
            for dir in [tmp, tmp + "/blobs", blobs] where mkdir(dir, 0o755) != 0 {
                throw KbuildError.syscall("mkdir", dir, verb: "export \(kid)")
            }
            for part in [kid, try manifest.config.kid()] + (try manifest.layers.map { try $0.kid() }) {
                let path = blobs + "/" + part.hex
                if lstat(path, &st) != 0 { try keg.get(part, to: path) }
            }
            let entry = Descriptor(mediaType: MediaType.manifest, kid: kid, size: Int64(try keg.logicalSize(of: kid)),
                                   annotations: tag.map { ["org.opencontainers.image.ref.name": $0] })
            struct Index: Encodable { var schemaVersion = 2; var mediaType = MediaType.index; var manifests: [Descriptor] }
            try Data(try canonicalJSON(Index(manifests: [entry]))).write(to: URL(fileURLWithPath: tmp + "/index.json"))
            try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: tmp + "/oci-layout"))
            guard rename(tmp, directory) == 0 else { throw KbuildError.syscall("rename", directory, verb: "export \(kid)") }
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw error
        }
    }
}
