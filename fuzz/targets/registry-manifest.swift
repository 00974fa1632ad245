// fuzz-modules: KbuildServer KbuildState KbuildCore
// A manifest or index PUT to the registry → RegistryInput.manifestDescriptors:
// the digests and sizes the registry checks against the Keg before it stores it.
import Foundation
import KbuildCore
@testable import KbuildServer
import KbuildState

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let body = fuzzBytes(start, count)
    guard let descriptors = RegistryInput.manifestDescriptors(body) else { return 0 }
    // The push is accepted only when each names sha256:<64 hex> (RegistryNames.kid(digest:)) and a size.
    let accepted = descriptors.allSatisfy { d in
        guard let digest = d.digest, let size = d.size else { return false }
        return size >= 0 && digest.hasPrefix("sha256:") && digest.utf8.count == 71 && (try? KID(parsing: digest)) != nil
    }
    // Then every descriptor kbuild will later read from this manifest (ImageStore
    // decodes it with JSONDecoder) is one the registry checked: digest and size.
    if accepted, let manifest = try? JSONDecoder().decode(Manifest.self, from: Data(body)),
       manifest.schemaVersion == 2, manifest.mediaType == MediaType.manifest {
        for d in [manifest.config] + manifest.layers {
            require(descriptors.contains(RegistryInput.Descriptor(digest: d.digest, size: d.size)),
                    "manifest names \(d.digest.debugDescription) (size \(d.size)), which the registry did not check (it checked \(descriptors))")
        }
    }
    return 0
}
