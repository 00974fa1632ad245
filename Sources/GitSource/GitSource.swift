public import KbuildCore
public import Keg
import CGit2
public import Foundation

/// What a pushed commit's tree became in the Keg, and who made the commit.
public struct SourceImport: Sendable, Equatable {
    /// The tree's KID: the source KID.
    public var tree: KID
    public var commit: String
    public var author: String
    public var authorEmail: String
    public var message: String
    public var committedAt: Date
    public var files: Int
    public var bytes: UInt64
}

/// Limits on what a push may carry.
public struct SourceLimits: Sendable {
    /// Largest single file.
    public var maxFileSize: UInt64
    /// Largest whole tree.
    public var maxTotalSize: UInt64
    /// What a tree over `maxTotalSize` is told, when the cap is not the tree limit itself (an app's Keg limit).
    public var overTotal: String?
    /// Deepest directory nesting (Linux refuses paths over 4 KiB anyway).
    public var maxDepth: Int
    /// Most entries in the whole tree (files, directories and links).
    public var maxEntries: Int

    public init(maxFileSize: UInt64 = 100 << 20, maxTotalSize: UInt64 = 2 << 30, maxDepth: Int = 64, maxEntries: Int = 1_000_000) {
        self.maxFileSize = maxFileSize
        self.maxTotalSize = maxTotalSize
        self.maxDepth = maxDepth
        self.maxEntries = maxEntries
    }
}

/// Reads a commit's tree with libgit2 straight into the Keg, as a Keg tree
/// whose KID is the same as `keg put` of a checkout of it (files 0644 or
/// 0755, directories 0755, symlinks as links). Refused, with the path named:
/// a `.git` entry (any case), `.` or `..` names, symlinks that point outside
/// the tree, submodules, a file or a tree over the limits. Nothing is stored
/// unless the whole tree is good.
public enum GitSource {
    /// `repository`: a path to the repository, or nil to open the one git's
    /// environment names (GIT_DIR, and GIT_QUARANTINE_PATH's objects inside a
    /// pre-receive hook, where the pushed objects still are).
    public static func importTree(repository: String?, revision: String, into keg: Keg,
                                  limits: SourceLimits = SourceLimits()) throws -> SourceImport {
        git_libgit2_init()
        defer { git_libgit2_shutdown() }
        var repo: OpaquePointer?
        let opened = repository.map { git_repository_open_ext(&repo, $0, 0, nil) }
            ?? git_repository_open_ext(&repo, nil, UInt32(GIT_REPOSITORY_OPEN_FROM_ENV.rawValue), nil)
        guard opened == 0, let repo else { throw gitError("open the repository \(repository ?? "from the environment")") }
        defer { git_repository_free(repo) }

        var object: OpaquePointer?
        guard git_revparse_single(&object, repo, revision) == 0, let object else { throw gitError("find revision \(revision)", code: .notFound) }
        defer { git_object_free(object) }
        var peeled: OpaquePointer?
        guard git_object_peel(&peeled, object, GIT_OBJECT_COMMIT) == 0, let commit = peeled else { throw gitError("read commit \(revision)") }
        defer { git_object_free(commit) }
        var treePointer: OpaquePointer?
        guard git_commit_tree(&treePointer, commit) == 0, let root = treePointer else { throw gitError("read the tree of \(revision)") }
        defer { git_tree_free(root) }

        var odbPointer: OpaquePointer?
        guard git_repository_odb(&odbPointer, repo) == 0, let odb = odbPointer else { throw gitError("open the object database") }
        defer { git_odb_free(odb) }
        var walk = Walk(repo: repo, odb: odb, keg: keg, writer: keg.writer(), limits: limits)
        let tree = try walk.tree(root, path: "", bytes: [], depth: 0)
        for (path, target) in walk.links {
            try GitSource.checkLink(target, at: path, links: walk.links)
        }
        try walk.writer.commit()

        let author = git_commit_author(commit).pointee
        var oid = git_commit_id(commit).pointee
        var hex = [CChar](repeating: 0, count: 41)
        git_oid_tostr(&hex, 41, &oid)
        return SourceImport(
            tree: tree, commit: String(decoding: hex.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self),
            author: String(cString: author.name), authorEmail: String(cString: author.email),
            message: String(cString: git_commit_message(commit)),
            committedAt: Date(timeIntervalSince1970: TimeInterval(git_commit_time(commit))),
            files: walk.files, bytes: walk.bytes)
    }

    static func gitError(_ verb: String, code: KbuildError.Code = .io) -> KbuildError {
        let reason = git_error_last().map { String(cString: $0.pointee.message) } ?? "unknown libgit2 error"
        return KbuildError(code, "failed to \(verb): \(reason)")
    }

    private struct Walk {
        let repo: OpaquePointer
        let odb: OpaquePointer
        let keg: Keg
        let writer: KegWriter
        let limits: SourceLimits
        var files = 0
        var entryCount = 0
        var bytes: UInt64 = 0
        /// Every symlink in the tree by its path's bytes (never a String: two
        /// different names can read as one), checked once the whole tree is known.
        var links: [[UInt8]: [UInt8]] = [:]

        init(repo: OpaquePointer, odb: OpaquePointer, keg: Keg, writer: KegWriter, limits: SourceLimits) {
            self.repo = repo
            self.odb = odb
            self.keg = keg
            self.writer = writer
            self.limits = limits
        }

        /// Recursion is bounded by `limits.maxDepth`, checked before going down.
        mutating func tree(_ tree: OpaquePointer, path: String, bytes pathBytes: [UInt8], depth: Int) throws -> KID {
            var entries: [Tree.Entry] = []
            entryCount += git_tree_entrycount(tree)
            guard entryCount <= limits.maxEntries else {
                throw KbuildError(.invalidArgument, "refusing the push: the tree has over \(limits.maxEntries) entries (at \(path.isEmpty ? "/" : path))")
            }
            for i in 0..<git_tree_entrycount(tree) {
                let entry = git_tree_entry_byindex(tree, i)!
                let nameBytes = Array(UnsafeBufferPointer(start: git_tree_entry_name(entry), count: strlen(git_tree_entry_name(entry)))).map { UInt8(bitPattern: $0) }
                let name = String(decoding: nameBytes, as: UTF8.self)
                let full = path.isEmpty ? name : path + "/" + name
                let fullBytes = pathBytes.isEmpty ? nameBytes : pathBytes + [UInt8(ascii: "/")] + nameBytes
                if name == "." || name == ".." || nameBytes.contains(UInt8(ascii: "/")) {
                    throw KbuildError(.invalidArgument, "refusing the push: the tree has an entry named \(full.debugDescription)")
                }
                if name.lowercased() == ".git" {
                    throw KbuildError(.invalidArgument, "refusing the push: the tree has a .git entry at \(full.debugDescription) (git's own files are never part of a source)")
                }
                let oid = git_tree_entry_id(entry)!
                switch git_tree_entry_filemode(entry) {
                case GIT_FILEMODE_TREE:
                    guard depth < limits.maxDepth else {
                        throw KbuildError(.invalidArgument, "refusing the push: \(String(full.prefix(200)))… is nested over \(limits.maxDepth) directories deep")
                    }
                    var sub: OpaquePointer?
                    guard git_tree_lookup(&sub, repo, oid) == 0, let sub else { throw GitSource.gitError("read directory \(full)") }
                    defer { git_tree_free(sub) }
                    entries.append(.directory(name, kid: try self.tree(sub, path: full, bytes: fullBytes, depth: depth + 1)))
                case GIT_FILEMODE_BLOB, GIT_FILEMODE_BLOB_EXECUTABLE:
                    let executable = git_tree_entry_filemode(entry) == GIT_FILEMODE_BLOB_EXECUTABLE
                    let content = try blob(oid, path: full)
                    let kid = KID(hashing: content)
                    if !keg.contains(kid) { try keg.stage(kid, file: content, in: writer) }
                    var e = Tree.Entry.file(name, kid: kid, size: UInt64(content.count), mode: executable ? 0o755 : 0o644)
                    e.name = nameBytes
                    entries.append(e)
                    files += 1
                case GIT_FILEMODE_LINK:
                    let target = try blob(oid, path: full)
                    links[fullBytes] = target
                    var e = Tree.Entry.symlink(name, target: "")
                    e.name = nameBytes
                    e.target = target
                    e.size = UInt64(target.count)
                    entries.append(e)
                case GIT_FILEMODE_COMMIT:
                    throw KbuildError(.invalidArgument, "refusing the push: \(full) is a submodule; kbuild builds only what the pushed tree itself holds")
                default:
                    throw KbuildError(.invalidArgument, "refusing the push: \(full) has an unknown git file mode")
                }
            }
            let tree = try Tree(entries: entries)
            let encoded = tree.encoded()
            let kid = KID(hashing: encoded)
            if !keg.contains(kid) { try keg.stage(kid, tree: tree, bytes: encoded, in: writer) }
            return kid
        }

        /// The blob's bytes, its size checked first from the object's header
        /// (a 2 MB push of a 2 GiB zero file is refused without inflating it).
        mutating func blob(_ oid: UnsafePointer<git_oid>, path: String) throws -> [UInt8] {
            var length = 0
            var type = GIT_OBJECT_ANY
            guard git_odb_read_header(&length, &type, odb, oid) == 0 else { throw GitSource.gitError("read the header of file \(path)") }
            try check(size: UInt64(length), path: path)
            var blob: OpaquePointer?
            guard git_blob_lookup(&blob, repo, oid) == 0, let blob else { throw GitSource.gitError("read file \(path)") }
            defer { git_blob_free(blob) }
            let size = UInt64(git_blob_rawsize(blob))
            guard size == UInt64(length) else { throw KbuildError(.corrupt, "failed to read file \(path): its header says \(length) bytes, its content \(size)") }
            bytes += size
            guard size > 0, let raw = git_blob_rawcontent(blob) else { return [] }
            return Array(UnsafeRawBufferPointer(start: raw, count: Int(size)))
        }

        func check(size: UInt64, path: String) throws {
            guard size <= limits.maxFileSize else {
                throw KbuildError(.invalidArgument, "refusing the push: \(path) is \(size) bytes, over the limit of \(limits.maxFileSize)")
            }
            guard bytes + size <= limits.maxTotalSize else {
                if let overTotal = limits.overTotal { throw KbuildError(.tooLarge, overTotal) }
                throw KbuildError(.invalidArgument, "refusing the push: the tree is over the limit of \(limits.maxTotalSize) bytes (at \(path))")
            }
        }
    }

    /// A symlink must stay inside the tree: relative, and never climbing above
    /// the root, following the tree's other symlinks as the kernel would
    /// (`d/y -> ..` with `z -> d/y/..` is `z -> ..`, outside), at most 40 hops.
    /// `links` is every symlink of the tree by its path's bytes.
    static func checkLink(_ target: [UInt8], at path: [UInt8], links: [[UInt8]: [UInt8]] = [:]) throws {
        let slash = UInt8(ascii: "/")
        let shown = String(decoding: path, as: UTF8.self)
        let text = String(decoding: target, as: UTF8.self)
        func outside(_ why: String = "points outside the tree") -> KbuildError {
            KbuildError(.invalidArgument, "refusing the push: symlink \(shown) \(why) (\(text.debugDescription))")
        }
        func parts(_ bytes: [UInt8]) throws -> [[UInt8]] {
            guard !bytes.isEmpty, bytes.first != slash, !bytes.contains(0) else { throw outside() }
            return bytes.split(separator: slash, omittingEmptySubsequences: true).map(Array.init)
        }
        var directory = Array(path.split(separator: slash).map(Array.init).dropLast())  // the link's own directory
        var pending = try parts(target)[...]
        var hops = 0
        while let part = pending.popFirst() {
            if part == [UInt8(ascii: ".")] { continue }
            if part == [UInt8(ascii: "."), UInt8(ascii: ".")] {
                guard directory.popLast() != nil else { throw outside() }
                continue
            }
            let candidate = Array((directory + [part]).joined(separator: [slash]))
            if let next = links[candidate] {
                hops += 1
                guard hops <= 40 else { throw outside("goes through over 40 symlinks") }
                pending = try parts(next)[...] + pending
            } else {
                directory.append(part)
            }
        }
    }

    /// The same, with paths as text (tests and callers that have them so).
    static func checkLink(_ target: [UInt8], at path: String, links: [String: [UInt8]] = [:]) throws {
        try checkLink(target, at: Array(path.utf8), links: Dictionary(links.map { (Array($0.key.utf8), $0.value) }, uniquingKeysWith: { a, _ in a }))
    }
}
