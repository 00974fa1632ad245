public import KbuildCore

/// The Keg of another machine that this one fills from and sends to: a build
/// worker that joined over the network pulls a build's inputs (source,
/// stack layers, buildpacks, cache) and publishes what it made (the app
/// layer, the cache, dependency layers, the log) before any ref names them.
/// On the control plane's own machine there is none: its Keg is the one.
public protocol KegUpstream: Sendable {
    /// Makes sure `kid` (and, for a tree, everything under it) is in `keg`.
    func fetch(_ kid: KID, into keg: Keg) async throws
    /// Makes sure every object of `roots` (and under them) that `keg` holds is upstream too.
    func publish(_ roots: [KID], from keg: Keg) async throws
}

extension Keg {
    /// What an object is stored as, and for a tree archive the tree it is made from.
    public func storedKind(_ kid: KID) throws -> (kind: ObjectKind, archivedTree: KID?) {
        let (header, payload) = try readStored(kid)
        return (header.kind, header.kind == .treeArchive ? try Keg.archivedTree(kid, payload: payload) : nil)
    }
}
