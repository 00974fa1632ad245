public import KbuildCore
public import Keg
public import KbuildState
import Foundation
import Sandbox

/// Buildpacks stored in the Keg and named by the refs `buildpacks/NAME`.
/// The shipped ones (the repository's `buildpacks/` folder) are registered
/// from where kbuild is installed; users add their own with `kbuild buildpack add`.
public struct BuildpackStore: Sendable {
    public let keg: Keg
    public let refs: any RefStore

    /// Detection order: these first, then the ones users added (by name), then `procfile`.
    public static let firstShipped = ["python", "nodejs", "go", "static"]
    public static let lastShipped = ["procfile"]

    public init(keg: Keg, refs: any RefStore) {
        self.keg = keg
        self.refs = refs
    }

    static func refName(_ name: String) throws -> RefName {
        guard Names.isStoreName(name) else {
            throw KbuildError(.invalidArgument, "invalid buildpack name \(name.debugQuoted): use 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
        }
        return try Schema.buildpack(name)
    }

    /// Every buildpack, in detection order.
    public func list() async throws -> [Buildpack] {
        let all = try await refs.list(prefix: Schema.buildpacks).compactMap { ref -> Buildpack? in
            guard case .buildpack(let name) = Schema.Key(ref.name) else { return nil }
            return Buildpack(name: name, tree: ref.kid)
        }
        let first = BuildpackStore.firstShipped.compactMap { n in all.first { $0.name == n } }
        let last = BuildpackStore.lastShipped.compactMap { n in all.first { $0.name == n } }
        let middle = all.filter { !BuildpackStore.firstShipped.contains($0.name) && !BuildpackStore.lastShipped.contains($0.name) }
        return first + middle + last
    }

    public func get(_ name: String) async throws -> Buildpack {
        guard let ref = try await refs.get(try BuildpackStore.refName(name)) else {
            throw KbuildError(.notFound, "no buildpack named \(name.debugQuoted): see `kbuild buildpack ls`, or add one with `kbuild buildpack add DIR --name \(name)`")
        }
        return Buildpack(name: name, tree: ref.kid)
    }

    /// Stores the buildpack at `directory` as `name` (its folder's name by default).
    @discardableResult
    public func add(directory: String, name: String? = nil, actor: String) async throws -> Buildpack {
        let name = name ?? URL(fileURLWithPath: directory).standardizedFileURL.lastPathComponent
        let ref = try BuildpackStore.refName(name)
        var st = stat()
        guard stat(directory, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw KbuildError(.notFound, "failed to add buildpack \(name): \(directory) is not a directory")
        }
        let tree = try keg.put(path: directory)
        try BuildpackStore.check(tree: tree, keg: keg, what: "\(directory)")
        if try await refs.get(ref)?.kid != tree {
            try await refs.compareAndSwap(ref, to: tree, expecting: .any, actor: actor)
        }
        return Buildpack(name: name, tree: tree)
    }

    /// Names a tree already in the Keg (sent from another machine) as buildpack `name`, after the same checks.
    @discardableResult
    public func add(tree: KID, name: String, actor: String) async throws -> Buildpack {
        let ref = try BuildpackStore.refName(name)
        guard keg.contains(tree) else { throw KbuildError(.notFound, "failed to add buildpack \(name): tree \(tree.short) is not in the Keg (send it first)") }
        try BuildpackStore.check(tree: tree, keg: keg, what: "tree \(tree.short)")
        if try await refs.get(ref)?.kid != tree {
            try await refs.compareAndSwap(ref, to: tree, expecting: .any, actor: actor)
        }
        return Buildpack(name: name, tree: tree)
    }

    /// Whether `source` names a git repository rather than a directory:
    /// `https://`, `http://`, `git://`, `ssh://` or `file://`, with an
    /// optional `#REF` (a branch or tag), as Heroku's buildpack URLs are.
    public static func isGitURL(_ source: String) -> Bool {
        ["https://", "http://", "git://", "ssh://", "file://"].contains { source.hasPrefix($0) }
    }

    /// Clones `url` (`#REF` for a branch or tag) once, shallow, and stores its
    /// tree as the buildpack `name` (default: the repository's name): later
    /// builds use the stored tree, named by its KID, and never clone again.
    public func add(gitURL url: String, name: String? = nil, actor: String) async throws -> Buildpack {
        let parts = url.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let repository = parts[0], ref = parts.count > 1 ? parts[1] : nil
        guard BuildpackStore.isGitURL(repository), !repository.contains(where: { $0.isWhitespace }),
              ref.map({ !$0.isEmpty && !$0.hasPrefix("-") && !$0.contains(where: { $0.isWhitespace }) }) ?? true else {
            throw KbuildError(.invalidArgument, "invalid buildpack URL \(url.debugQuoted): want https://HOST/PATH[.git][#BRANCH-OR-TAG]")
        }
        var base = URL(string: repository)?.lastPathComponent ?? ""
        if base.hasSuffix(".git") { base.removeLast(4) }
        let tmp = keg.dataDir.kegTmp.path + "/buildpack-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try await BuildpackStore.clone(repository, ref: ref, into: tmp)
        try? FileManager.default.removeItem(atPath: tmp + "/.git")
        return try await add(directory: tmp, name: name ?? base.lowercased(), actor: actor)
    }

    static func clone(_ repository: String, ref: String?, into directory: String) async throws {
        // A server that stalls (under 1 KB/s for 30 s) ends the clone rather than hanging it.
        let args = ["-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=30", "clone", "--quiet", "--depth", "1"]
            + (ref.map { ["--branch", $0] } ?? []) + ["--", repository, directory]
        // On a thread of its own: git is waited for, which must not hold the cooperative pool.
        let (status, output) = try await offThread {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/git")
            p.arguments = args
            p.environment = ["GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin"]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: data, as: UTF8.self))
        }
        guard status == 0 else {
            throw KbuildError(.notFound, "failed to clone the buildpack \(repository)\(ref.map { "#\($0)" } ?? ""): \(output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// A buildpack's tree must have executable `bin/detect` and `bin/compile` files
    /// (`bin/release` is optional: no default process types then).
    public static func check(tree: KID, keg: Keg, what: String) throws {
        let root = try keg.tree(tree)
        guard let bin = root.entries.first(where: { $0.nameString == "bin" }), bin.type == .directory, let binKID = bin.kid else {
            throw KbuildError(.invalidArgument, "\(what) is not a buildpack: it has no bin/ directory (want bin/detect, bin/compile, bin/release)")
        }
        let entries = try keg.tree(binKID).entries
        for step in ["detect", "compile"] {
            guard let e = entries.first(where: { $0.nameString == step }), e.type == .file, e.mode & 0o111 != 0 else {
                throw KbuildError(.invalidArgument, "\(what) is not a buildpack: bin/\(step) is missing or not an executable file")
            }
        }
    }

    /// The subtree at `path` of a source tree (a buildpack the app brings itself).
    public static func subtree(_ tree: KID, path: [String], keg: Keg) throws -> KID {
        var current = tree
        for (i, part) in path.enumerated() {
            guard let e = try keg.tree(current).entries.first(where: { $0.nameString == part }), e.type == .directory, let kid = e.kid else {
                throw KbuildError(.notFound, "no directory ./\(path[...i].joined(separator: "/")) in the pushed tree")
            }
            current = kid
        }
        return current
    }

    /// Registers the buildpacks that ship with kbuild, when they can be found
    /// (`$KBUILD_BUILDPACKS`, `../share/kbuild/buildpacks` beside the binary,
    /// or the `buildpacks/` folder of the source checkout it was built in).
    /// Cheap when nothing changed: the Keg dedups and the refs stay.
    @discardableResult
    public func registerShipped(actor: String) async throws -> [Buildpack] {
        guard let dir = BuildpackStore.shippedDirectory() else { return [] }
        var out: [Buildpack] = []
        for name in BuildpackStore.firstShipped + BuildpackStore.lastShipped where FileManager.default.fileExists(atPath: "\(dir)/\(name)/bin/detect") {
            out.append(try await add(directory: "\(dir)/\(name)", name: name, actor: actor))
        }
        return out
    }

    public static func shippedDirectory() -> String? {
        let fm = FileManager.default
        if let env = ProcessInfo.processInfo.environment["KBUILD_BUILDPACKS"], !env.isEmpty { return env }
        guard let exe = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        if fm.fileExists(atPath: dir.appendingPathComponent("../share/kbuild/buildpacks/procfile/bin/detect").path) {
            return dir.appendingPathComponent("../share/kbuild/buildpacks").standardizedFileURL.path
        }
        for _ in 0..<5 {
            if fm.fileExists(atPath: dir.appendingPathComponent("buildpacks/procfile/bin/detect").path),
               fm.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) {
                return dir.appendingPathComponent("buildpacks").path
            }
            dir.deleteLastPathComponent()
        }
        return nil
    }
}
