public import KbuildCore
public import Keg
import OCI
public import KbuildState
public import Foundation

/// kbuild's dependency layers, beyond Heroku's API: a buildpack with a
/// `bin/dependencies` names the directory its dependencies go to (`/app/.venv`)
/// and the files they are made from (`requirements.txt`). kbuild installs them
/// in a sandbox that holds only those files, once per `DependencyKey`, and
/// makes the directory an image layer of its own: a push that changes only
/// code installs nothing, two apps with the same requirements share the
/// layer, and a node that runs the previous release pulls only the app layer.
///
/// A layer installed with a build cache that held anything is reused by its
/// own app only: a tenant writes its cache, so what came out of it is not
/// another tenant's to run. A layer installed from an empty cache depends on
/// the key alone and is shared (`builds/dependencies/<hex>`).
public enum DependencyLayers {
    /// Everything a dependency layer depends on: its KID names the layer.
    public struct Key: Codable, Sendable, Equatable {
        public var kind = "kbuild.dependencies.inputs/v1"
        /// The image the install runs on, and the one the app runs on.
        public var buildImage: KID
        public var runImage: KID
        public var buildpack: KID
        /// `/app/…`, where the dependencies are.
        public var directory: String
        /// A tree of just the files the buildpack named (their paths kept).
        public var files: KID
        public var network: String
        /// The build config vars (an index URL, a token for a private index).
        public var environment: [String: String]
        /// `builds:cache:purge` turns it: after one, nothing made before is reused.
        public var epoch: Int?

        public var kid: KID { KID(hashing: (try? canonicalJSON(self)) ?? []) }
    }

    /// A layer made: ref `builds/dependencies/<key hex>` (shared) or `apps/APP/dependencies/<key hex>`.
    public struct Record: Codable, Sendable, Equatable {
        public var kind = "kbuild.dependencies/v1"
        public var key: KID
        /// The layer's tree (rooted at /: `app/.venv/…`) and its descriptor.
        public var tree: KID
        public var layer: Descriptor
        public var directory: String
        /// Whether it was installed from an empty cache (and so is shared).
        public var clean: Bool
        public var madeAt: Date
        /// What gc keeps for it: the tree and the layer's tar.
        public var links: [KID]

        public init(key: KID, tree: KID, layer: Descriptor, directory: String, clean: Bool, madeAt: Date) {
            self.key = key
            self.tree = tree
            self.layer = layer
            self.directory = directory
            self.clean = clean
            self.madeAt = madeAt
            self.links = [tree] + [try? layer.kid()].compactMap { $0 }
        }
    }


    /// What `bin/dependencies` printed: the directory under /app (as path
    /// components) and the files, each a relative path in the app's tree.
    public struct Declaration: Sendable, Equatable {
        public var directory: [String]
        public var files: [[String]]
    }

    /// Reads `bin/dependencies`' output; nil (no layer) when it names nothing usable.
    public static func parse(_ text: String) throws -> Declaration {
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        func bad(_ why: String) -> KbuildError { KbuildError(.invalidArgument, "bin/dependencies printed \(why)") }
        guard let first = lines.first, first.hasPrefix("/app/") else { throw bad("no directory under /app on its first line") }
        let directory = try components(String(first.dropFirst("/app/".count)), what: first)
        guard lines.count > 1 else { throw bad("no input files after the directory") }
        guard lines.count <= 257 else { throw bad("more than 256 input files") }
        let files = try lines.dropFirst().map { try components($0, what: $0) }
        guard !files.contains(where: { Array($0.prefix(directory.count)) == directory }) else { throw bad("an input inside the dependency directory") }
        return Declaration(directory: directory, files: files)
    }

    /// A relative path's parts: no `..`, `.`, empty parts, NULs or `.git`.
    static func components(_ path: String, what: String) throws -> [String] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init).filter { $0 != "." }
        guard !parts.isEmpty, !path.hasPrefix("/"), parts.allSatisfy({ $0 != ".." && !$0.contains("\0") && $0 != ".git" }) else {
            throw KbuildError(.invalidArgument, "bin/dependencies printed \(what.debugQuoted): want a path inside the app's tree")
        }
        return parts
    }

    /// Writes the declared files of `source` (a Keg tree) under `root`, by their
    /// paths; symlinks are not followed (an input that is one is refused).
    public static func materialise(_ declaration: Declaration, source: KID, keg: Keg, at root: String) throws -> KID {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        for path in declaration.files {
            var tree = source
            for (i, part) in path.enumerated() {
                guard let entry = try keg.tree(tree).entries.first(where: { $0.nameString == part }), let kid = entry.kid else {
                    throw KbuildError(.notFound, "bin/dependencies named \(path.joined(separator: "/")), which is not in the pushed tree")
                }
                let target = root + "/" + path[...i].joined(separator: "/")
                if i == path.count - 1 {
                    guard entry.type == .file || entry.type == .directory else {
                        throw KbuildError(.invalidArgument, "bin/dependencies named \(path.joined(separator: "/")), which is not a file or a directory")
                    }
                    if !FileManager.default.fileExists(atPath: target) { try keg.get(kid, to: target) }
                    if entry.type == .file { chmod(target, mode_t(entry.mode & 0o777)) }
                } else {
                    guard entry.type == .directory else {
                        throw KbuildError(.invalidArgument, "bin/dependencies named \(path.joined(separator: "/")), whose parent is not a directory")
                    }
                    try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
                    tree = kid
                }
            }
        }
        return try keg.put(path: root, skipSpecialFiles: true, dropSetID: true)
    }

    /// The record for `key` a build may use: the app's own (for a build scoped to it), else a shared one.
    /// With `upstream` (a worker on another machine), the layer's tree is fetched
    /// from the control plane, which holds the layer itself.
    public static func find(_ key: KID, app: String?, records: any RecordContent, keg: Keg, refs: any RefStore,
                            upstream: (any KegUpstream)? = nil) async throws -> Record? {
        for name in [try app.map { try Schema.appDependency($0, key) }, try Schema.sharedDependency(key)].compactMap({ $0 }) {
            guard let ref = try await refs.get(name),
                  let record = try? await Records.get(Record.self, ref.kid, from: records, what: "dependency layer") else { continue }
            if let upstream {
                if (try? await upstream.fetch(record.tree, into: keg)) != nil { return record }
            } else if keg.contains(record.tree), let blob = try? record.layer.kid(), keg.contains(blob) {
                return record
            }
        }
        return nil
    }

    /// Keeps a layer made: shared when installed from an empty cache, else the
    /// app's own. The first shared layer of a key stays (builds of other apps
    /// may use it already); the app's own is replaced by its newer one.
    public static func store(_ record: Record, app: String, records: any RecordContent, refs: any RefStore, actor: String) async throws {
        if record.clean {
            let name = try Schema.sharedDependency(record.key)
            guard try await refs.get(name) == nil else { return }
            do {
                try await refs.compareAndSwap(name, to: try Records.put(record, in: records), expecting: .absent, actor: actor)
            } catch let error as KbuildError where error.code == .conflict {
                // Another build made it first: that one stays.
            }
        } else {
            try await refs.compareAndSwap(try Schema.appDependency(app, record.key), to: try Records.put(record, in: records), expecting: .any, actor: actor)
        }
    }

    /// Forgets an app's own layers (`builds:cache:purge`).
    public static func purge(app: String, refs: any RefStore, actor: String) async throws -> Int {
        try await refs.removeAll(under: try Schema.appDependencies(app), actor: actor)
    }
}
