/// What an object's bytes are. The KID always names the logical bytes; the kind
/// says how to read them and what they link to.
public enum ObjectKind: UInt8, Sendable, CustomStringConvertible, CaseIterable {
    /// Opaque bytes: a small file, a chunk, a log, a record.
    case blob = 1
    /// A directory: sorted entries of name, mode, KID or symlink target (`Tree`).
    case tree = 2
    /// A large file stored as content-defined chunks. The KID is still the
    /// SHA-256 of the whole file; the stored payload points at a `ChunkIndex`.
    case chunkedFile = 3
    /// One node of a chunked file's index: (KID, size) of chunks or of lower nodes.
    case chunkIndex = 4
    /// The reproducible tar of a tree (`TreeArchive`), stored as a recipe: the
    /// KID is the SHA-256 of the tar; the payload names the tree, and readers
    /// make the bytes from its files.
    case treeArchive = 5

    public var description: String {
        switch self {
        case .blob: "blob"
        case .tree: "tree"
        case .chunkedFile: "file"
        case .chunkIndex: "index"
        case .treeArchive: "archive"
        }
    }
}
