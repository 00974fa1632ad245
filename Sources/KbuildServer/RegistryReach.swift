import KbuildCore
import Keg
import KbuildState
import Foundation
import Synchronization
import NIOPosix

/// What a repository may serve to a token limited to it: the manifests and
/// blobs reachable from the repository's tags by OCI descriptors alone (index
/// → manifests → config and layers). KIDs named anywhere else (labels,
/// annotations, kbuild's records) are not followed, so an image never leads
/// to an app's config vars, its build records or another app's source.
/// Everything else answers 404, the same as an object that is not there.
///
/// The set is computed from the tags' manifests and cached by the tags' KIDs,
/// so it is walked again only when a tag moves.
final class RegistryReach: Sendable {
    let keg: Keg
    let refs: any RefStore
    private let cache = Mutex<[String: (roots: [KID], reachable: Set<KID>)]>([:])
    /// Manifests followed at most per repository (an index of indexes is bounded).
    static let manifestLimit = 10_000

    init(keg: Keg, refs: any RefStore) {
        self.keg = keg
        self.refs = refs
    }

    /// Whether `kid` is reachable from a tag of `repository`.
    func contains(_ kid: KID, repository: String) async throws -> Bool {
        var found: [KID] = []
        for tag in try await RegistryNames.tags(of: repository, in: refs) {
            if let ref = try await refs.get(try RegistryNames.tagRef(repository: repository, tag: tag)) { found.append(ref.kid) }
        }
        let roots = found.sorted { $0.hex < $1.hex }
        if let cached = cache.withLock({ $0[repository] }), cached.roots == roots { return cached.reachable.contains(kid) }
        let reachable = try await NIOThreadPool.singleton.runIfActive { [keg] in
            RegistryReach.walk(roots) { manifest in try? keg.logicalBytes(manifest, maxWhole: RegistryRoutesLimits.manifest) }
        }
        cache.withLock { cache in
            if cache.count >= 1024 { cache.removeAll() }
            cache[repository] = (roots, reachable)
        }
        return reachable.contains(kid)
    }

    /// The KIDs reachable from `roots` (manifests or indexes) by descriptors:
    /// a pure function of the manifests' bytes (`load` gives them, nil for
    /// one that is not there).
    static func walk(_ roots: [KID], load: (KID) -> [UInt8]?) -> Set<KID> {
        var reachable = Set<KID>()
        var pending = roots
        var manifests = 0
        while let next = pending.popLast() {
            guard reachable.insert(next).inserted, manifests < manifestLimit, let bytes = load(next) else { continue }
            manifests += 1
            // Read as the push check read it (RegistryInput): an index's manifests are
            // manifests themselves; a manifest's config and layers are blobs.
            for d in RegistryInput.manifestDescriptors(bytes) ?? [] {
                guard let kid = d.digest.flatMap({ try? RegistryNames.kid(digest: $0) }) else { continue }
                if d.isManifest { pending.append(kid) } else { reachable.insert(kid) }
            }
        }
        return reachable
    }
}

enum RegistryRoutesLimits {
    /// Largest manifest read or accepted (the spec suggests 4 MiB).
    static let manifest: UInt64 = 4 << 20
}
