// fuzz-modules: KbuildState KbuildCore
// An image's manifest and config JSON → the OCI types' decoding, as
// ImageStore.manifest, config(of:) and layerTrees read them.
import Foundation
import KbuildCore
import KbuildState

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let data = Data(fuzzBytes(start, count))
    if let manifest = try? JSONDecoder().decode(Manifest.self, from: data) {
        for descriptor in [manifest.config] + manifest.layers {
            // A digest names a KID exactly, or is refused.
            if let kid = try? descriptor.kid() {
                require(kid.ociDigest == descriptor.digest, "\(descriptor.digest.debugQuoted) names \(kid)")
            }
            if let tree = descriptor.annotations?[treeAnnotation], let kid = try? KID(parsing: tree) {
                require(try! KID(parsing: kid.description) == kid, "tree \(tree.debugQuoted)")
            }
        }
        // kbuild's own writing of it (canonicalJSON) reads back the same.
        let written = try! canonicalJSON(manifest)
        let again = try? JSONDecoder().decode(Manifest.self, from: Data(written))
        require(again == manifest, "manifest does not survive canonicalJSON: \(String(decoding: written, as: UTF8.self))")
    }
    if let config = try? JSONDecoder().decode(ImageConfig.self, from: data) {
        let environment = config.config?.environment ?? [:]
        for name in environment.keys { require(!name.contains("="), "Env name \(name.debugQuoted) has '='") }
        let written = try! canonicalJSON(config)
        let again = try? JSONDecoder().decode(ImageConfig.self, from: Data(written))
        require(again == config, "config does not survive canonicalJSON: \(String(decoding: written, as: UTF8.self))")
    }
    return 0
}
