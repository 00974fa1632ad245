public import KbuildCore
public import Keg

/// A Keg tree as an OCI layer: an uncompressed tar that is the same bytes on
/// every machine (`TreeArchive`: sorted entries, parents first, every mtime
/// 1980-01-01T00:00:01Z, owner 0:0, the stored modes). The Keg keeps it as a
/// recipe naming the tree, so a layer costs a hash, not a copy.
public enum LayerTar {
    public static let createdTimestamp = "1980-01-01T00:00:01Z"

    /// Stores the layer of `tree` and returns its KID and size. `source` is
    /// the directory the tree was just stored from, if there is one (faster).
    public static func store(tree: KID, source: String? = nil, keg: Keg) throws -> (kid: KID, size: UInt64) {
        try keg.putArchive(of: tree, source: source)
    }
}
