public import KbuildCore
public import Foundation
import CKbuild

/// What `gc` did.
public struct GCReport: Sendable {
    public var reachable = 0
    public var deleted = 0
    public var bytesFreed: UInt64 = 0
    public var keptYoung = 0
    public var cacheFilesDeleted = 0
    public var tmpFilesDeleted = 0
    /// Packs deleted or rewritten (partly reachable, or merged).
    public var packsRewritten = 0
    /// Roots that name objects the Keg does not have (reported, not fatal).
    public var missingRoots: [KID] = []
}

extension Keg {
    /// Deletes every object not reachable from `roots`.
    ///
    /// The caller computes the roots (`RetentionRule` over the refs, their
    /// history and pins). On top of them this keeps: objects younger than
    /// `grace` (a `put` in flight may be about to name them; `freshen` keeps
    /// deduplicated ones young), and every file that a checkout still links to
    /// in the file cache (a running process's lower dir uses it). Unused cache
    /// files of unreachable objects and stale temporary files go too.
    public func gc(roots: Set<KID>, grace: TimeInterval = 3600, dryRun: Bool = false) throws -> GCReport {
        var report = GCReport()
        let now = Date().timeIntervalSince1970
        var stack: [(KID, Role)] = []

        // Files in use by a checkout (link count above one) are roots.
        let cacheFiles = try self.cacheFiles()
        for file in cacheFiles where file.links > 1 { stack.append((file.kid, .file)) }
        for root in roots {
            if contains(root) { stack.append((root, .unknown)) } else { report.missingRoots.append(root) }
        }
        // Young objects are roots too, with everything under them: a put in
        // flight may be about to name them (it freshened what it reused). A
        // packed object is as young as its pack.
        var old: [(KID, off_t)] = []
        var packed: [(pack: PackSet.Pack, young: Bool)] = []
        for kid in try looseObjects() {
            var st = stat()
            guard stat(objectPath(kid), &st) == 0 else { continue }
            if now - Double(st.st_mtim.tv_sec) < grace {
                stack.append((kid, .unknown))
                report.keptYoung += 1
            } else {
                old.append((kid, st.st_size))
            }
        }
        for pack in packs.all {
            var st = stat()
            guard stat(packs.path(pack), &st) == 0 else { continue }
            let young = now - Double(st.st_mtim.tv_sec) < grace
            if young {
                for i in 0..<pack.count { stack.append((pack.kid(at: i), .unknown)) }
                report.keptYoung += pack.count
            }
            packed.append((pack, young))
        }

        var visited = Set<Visit>()
        var marked = Set<KID>()
        while let (kid, role) = stack.popLast() {
            guard visited.insert(Visit(kid: kid, role: role)).inserted, contains(kid) else { continue }
            marked.insert(kid)
            stack.append(contentsOf: try references(of: kid, as: role))
        }
        report.reachable = marked.count

        // Packs: one with nothing reachable goes; one partly reachable is
        // rewritten with what is; and when there are more than
        // `packsToMerge` old packs, all of them are merged into one (every
        // pack costs each lookup a search and each process an index load).
        // The new pack is visible before the old ones go.
        let oldPacks = packed.filter { !$0.young }.map(\.pack)
        let merge = oldPacks.count > Keg.packsToMerge
        var rewrite: [(pack: PackSet.Pack, live: [Int])] = []
        for pack in oldPacks {
            let live = (0..<pack.count).filter { marked.contains(pack.kid(at: $0)) }
            guard live.count < pack.count || merge else { continue }
            rewrite.append((pack, live))
            report.deleted += pack.count - live.count
            report.bytesFreed += (0..<pack.count).filter { !marked.contains(pack.kid(at: $0)) }
                .reduce(UInt64(0)) { $0 + UInt64(pack.entry(at: $1).length) }
        }
        report.packsRewritten = rewrite.count
        if !dryRun && !rewrite.isEmpty {
            try repack(rewrite.filter { !$0.live.isEmpty })
            for (pack, _) in rewrite {
                let index = packs.dir + "/" + pack.name + ".idx"
                guard unlink(index) == 0 || errno == ENOENT else { throw KbuildError.syscall("unlink", index, verb: "collect pack \(pack.name)") }
                unlink(packs.path(pack))
            }
        }

        packs.rescanIfChanged(force: true)

        // Parents before children: a gc cut short never leaves a tree or a
        // file record whose parts are gone.
        var doomed: [(kid: KID, size: off_t, order: Int)] = []
        for (kid, size) in old where !marked.contains(kid) {
            let kind = try? self.kind(of: kid)
            let order = switch kind {
            case .treeArchive: 0  // names a tree
            case .tree, .chunkedFile: 1
            case .chunkIndex: 2
            case .blob, nil: 3
            }
            doomed.append((kid, size, order))
        }
        for victim in doomed.sorted(by: { $0.order < $1.order }) {
            if dryRun || unlink(objectPath(victim.kid)) == 0 {
                report.deleted += 1
                report.bytesFreed += UInt64(victim.size)
            } else if errno != ENOENT {
                throw KbuildError.syscall("unlink", objectPath(victim.kid), verb: "collect \(victim.kid)")
            }
        }
        for file in cacheFiles where file.links == 1 && !marked.contains(file.kid) {
            if dryRun || unlink(file.path) == 0 {
                report.cacheFilesDeleted += 1
                report.bytesFreed += file.size
            }
        }
        for path in try stagingFiles() {
            var st = stat()
            guard lstat(path, &st) == 0, now - Double(st.st_mtim.tv_sec) >= grace else { continue }
            if dryRun || unlink(path) == 0 { report.tmpFilesDeleted += 1 }
        }
        return report
    }

    /// More old packs than this are merged into one by gc.
    static let packsToMerge = 16

    /// Writes the given entries of the given packs (each object once) into
    /// one new pack and makes it visible.
    func repack(_ parts: [(pack: PackSet.Pack, live: [Int])]) throws {
        guard !parts.isEmpty else { return }
        let builder = try PackBuilder(dir: packsPath)
        do {
            var written = Set<KID>()
            for (pack, live) in parts {
                for i in live {
                    let kid = pack.kid(at: i)
                    guard written.insert(kid).inserted else { continue }
                    let (offset, length) = pack.entry(at: i)
                    let bytes = try packs.read(PackSet.Location(pack: pack, offset: offset, length: length), kid: kid)
                    try bytes.withUnsafeBytes { try builder.append(kid, parts: [$0]) }
                }
            }
            let staged = try builder.finish()
            try syncKeg(verb: "repack")
            for entry in staged where rename(entry.tmp, entry.final) != 0 {
                throw KbuildError.syscall("rename", entry.final, verb: "repack")
            }
            try syncKeg(verb: "repack")
        } catch {
            builder.discard()
            throw error
        }
    }

    func syncKeg(verb: String) throws {
        let fd = open(packsPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw KbuildError.syscall("open", packsPath, verb: verb) }
        defer { close(fd) }
        guard kb_syncfs(fd) == 0 else { throw KbuildError.syscall("syncfs", packsPath, verb: verb) }
    }

    /// How an object was named: its bytes are read as what its parent said it is.
    enum Role: UInt8 {
        /// A root: read by its stored kind.
        case unknown
        case tree
        case file
        case index
        /// A chunk: bytes with no links.
        case leaf
    }

    struct Visit: Hashable {
        var kid: KID
        var role: Role
    }

    /// A kbuild record (JSON with `links`) keeps the objects it lists.
    /// An OCI image manifest or index names its parts by digest, which is the
    /// KID of their bytes: a root (a stack or release ref) or a young blob that
    /// parses as one keeps its config, its layers, the tree kbuild recorded for
    /// each layer (`dev.kbuild.tree`) and the manifests of an index. Reading
    /// more than is there only keeps more: gc never loses by it.
    func ociReferences(of kid: KID) -> [(KID, Role)] {
        guard let size = try? logicalSize(of: kid), size < 4 << 20,
              let bytes = try? logicalBytes(kid), bytes.first == UInt8(ascii: "{"),
              let json = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
        else { return [] }
        // kbuild's own records (builds, pushes, apps) list what they depend on in `links`.
        if let links = json["links"] as? [String] {
            return links.compactMap { try? KID(parsing: $0) }.map { ($0, .unknown) }
        }
        guard json["schemaVersion"] as? Int == 2 else { return [] }
        func named(_ digest: Any?) -> KID? {
            guard let text = digest as? String, text.hasPrefix("sha256:") else { return nil }
            return try? KID(parsing: "K-" + text.dropFirst(7))
        }
        var out: [(KID, Role)] = []
        if let config = json["config"] as? [String: Any], let k = named(config["digest"]) { out.append((k, .leaf)) }
        for layer in json["layers"] as? [[String: Any]] ?? [] {
            if let k = named(layer["digest"]) { out.append((k, .file)) }
            if let annotations = layer["annotations"] as? [String: Any], let text = annotations["dev.kbuild.tree"] as? String,
               let tree = try? KID(parsing: text) { out.append((tree, .tree)) }
        }
        for manifest in json["manifests"] as? [[String: Any]] ?? [] {
            if let k = named(manifest["digest"]) { out.append((k, .unknown)) }
        }
        return out
    }

    /// What an object links to, read in the role it was named in.
    func references(of kid: KID, as role: Role) throws -> [(KID, Role)] {
        switch role {
        case .unknown:
            switch try self.kind(of: kid) {
            case .tree: return try references(of: kid, as: .tree)
            case .chunkedFile, .treeArchive: return try references(of: kid, as: .file)
            case .chunkIndex: return try references(of: kid, as: .index)
            case .blob: return ociReferences(of: kid)
            }
        case .tree:
            return try tree(kid).entries.compactMap { e in
                guard let child = e.kid else { return nil }
                return (child, e.type == .directory ? .tree : .file)
            }
        case .file:
            let (header, payload) = try readStored(kid)
            if header.kind == .treeArchive { return [(try Keg.archivedTree(kid, payload: payload), .tree)] }
            guard header.kind == .chunkedFile else { return [] }
            return [(try chunkedFileRoot(kid, payload: payload), .index)]
        case .index:
            let node = try chunkIndexNode(kid)
            return node.entries.map { ($0.kid, node.level == 0 ? .leaf : .index) }
        case .leaf:
            return []
        }
    }
}
