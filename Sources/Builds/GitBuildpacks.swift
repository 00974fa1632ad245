public import KbuildCore
public import Keg
public import KbuildState
public import Sandbox
import Foundation
import OCI
import Stacks
import Synchronization

/// Buildpacks an app names by git URL in `.buildpacks` (Heroku's
/// `https://github.com/…/buildpack.git#v1`). The URL is the tenant's, so the
/// clone is a build step like any other: `git` from the build image, in a
/// sandbox with the app's build network (egress: the outside only, never the
/// host or kbuild), the build's limits and a disk of its own. Cloned once per
/// app (`apps/APP/buildpacks/HEX`, dropped by `builds:cache:purge`), stored
/// as a tree and named by its KID like any buildpack; another app that names
/// the same URL clones its own copy and learns nothing of this one.
public struct GitBuildpacks: Sendable {
    public let keg: Keg
    public let refs: any RefStore

    /// What a clone may use.
    public static let limits = (memory: UInt64(512 << 20), pids: 256, cpus: 1.0, timeout: Duration.seconds(180), disk: UInt64(512 << 20))

    public init(keg: Keg, refs: any RefStore) {
        self.keg = keg
        self.refs = refs
    }

    /// The record of one clone.
    struct Record: Codable, Sendable {
        var kind = "kbuild.git-buildpack/v1"
        var url: String
        var ref: String?
        var buildpack: Buildpack
        var clonedAt: Date
        var links: [String]
    }

    public static func refName(app: String, url: String, ref: String?) throws -> RefName {
        try Schema.appBuildpack(app, hash: String(KID(hashing: Array((url + "#" + (ref ?? "")).utf8)).hex.prefix(32)))
    }

    /// The buildpack `url` (at `ref`) names for `app`: the stored clone, or a
    /// new one (`cloning` is called first, `sandbox` asked for one then).
    public func resolve(url: String, ref: String?, app: String, buildImage: KID, network: String,
                        sandbox: () throws -> Sandbox, egress: EgressNetwork?, actor: String,
                        cloning: () -> Void = {}) async throws -> Buildpack {
        let name = try GitBuildpacks.refName(app: app, url: url, ref: ref)
        if let stored = try await refs.get(name), keg.contains(stored.kid) {
            let record = try await Records.get(Record.self, stored.kid, from: keg, what: "git buildpack")
            if keg.contains(record.buildpack.tree) { return record.buildpack }
        }
        let what = "the buildpack \(url)\(ref.map { "#\($0)" } ?? "") (named in .buildpacks)"
        guard network == BuildNetwork.egress.rawValue else {
            throw KbuildError(.unsatisfiable, "failed to clone \(what): this app's builds have no network (kbuild apps:set \(app) build-network=egress)")
        }
        guard let egress else {
            throw KbuildError(.unsatisfiable, "failed to clone \(what): this process cannot give a build the network (run kbuild up as root)")
        }
        cloning()
        let sandbox = try sandbox()
        let stacks = StackStore(keg: keg, refs: refs)
        let images = ImageStore(keg: keg)
        let manifest = try images.manifest(buildImage)
        let lowers = try stacks.lowerDirs(for: Stack(name: "build", image: buildImage, manifest: manifest, layers: try images.layerTrees(manifest)))

        let dirs = keg.dataDir.root.path + "/builds"
        let work = "\(dirs)/work/git-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        for dir in [dirs, dirs + "/work"] where mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw KbuildError.syscall("mkdir", dir, verb: "clone \(what)")
        }
        let disk = try await ScratchDisk.make(at: work, size: GitBuildpacks.limits.disk)
        let held: EgressNetwork.Held
        do {
            try await egress.installFirewall()
            held = try await egress.makeHeld()
        } catch {
            await disk.remove()
            throw error
        }
        let tree: KID
        do {
            tree = try await clone(url: url, ref: ref, what: what, into: work, lowers: lowers, link: held.link, sandbox: sandbox)
        } catch {
            await egress.remove(held)
            await disk.remove()
            throw error
        }
        await egress.remove(held)
        await disk.remove()
        var base = URL(string: url)?.lastPathComponent ?? "git"
        if base.hasSuffix(".git") { base.removeLast(4) }
        let packName = "git-" + String(base.lowercased().filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }.prefix(40))
        let pack = Buildpack(name: packName, tree: tree)
        let record = Record(url: url, ref: ref, buildpack: pack, clonedAt: Date(), links: [tree.description])
        try await refs.compareAndSwap(name, to: try Records.put(record, in: keg), expecting: .any, actor: actor)
        return pack
    }

    private func clone(url: String, ref: String?, what: String, into work: String, lowers: [String], link: EgressNetwork.Link,
                       sandbox: Sandbox) async throws -> KID {
        guard chmod(work, 0o755) == 0, mkdir(work + "/out", 0o755) == 0 else { throw KbuildError.syscall("mkdir", work + "/out", verb: "clone \(what)") }
        do {
            try await run(clone(url: url, ref: ref, shallow: true), what: what, lowers: lowers, link: link, sandbox: sandbox, out: work + "/out")
        } catch let error as KbuildError where error.message.contains("does not support shallow") {
            // A server of the dumb HTTP protocol (a bare repository on a web server) has the whole history only.
            try? FileManager.default.removeItem(atPath: work + "/out/pack")
            try await run(clone(url: url, ref: ref, shallow: false), what: what, lowers: lowers, link: link, sandbox: sandbox, out: work + "/out")
        }
        // What the sandbox left is the tenant's: a real directory, its .git removed without following anything.
        let pack = work + "/out/pack"
        var st = stat()
        guard lstat(pack, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw KbuildError(.invalidArgument, "failed to clone \(what): the clone is not a directory")
        }
        if lstat(pack + "/.git", &st) == 0 {
            if st.st_mode & S_IFMT == S_IFDIR { try? FileManager.default.removeItem(atPath: pack + "/.git") } else { unlink(pack + "/.git") }
        }
        let tree = try keg.put(path: pack, skipSpecialFiles: true, dropSetID: true, maxBytes: GitBuildpacks.limits.disk)
        try BuildpackStore.check(tree: tree, keg: keg, what: what)
        return tree
    }

    /// git's command line: only the network protocols, no submodules, no prompt.
    private func clone(url: String, ref: String?, shallow: Bool) -> [String] {
        ["git", "-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=30", "-c", "protocol.allow=never",
         "-c", "protocol.https.allow=always", "-c", "protocol.http.allow=always", "-c", "protocol.git.allow=always",
         "clone", "--quiet", "--no-recurse-submodules"] + (shallow ? ["--depth", "1"] : [])
            + (ref.map { ["--branch", $0] } ?? []) + ["--", url, "/out/pack"]
    }

    private func run(_ command: [String], what: String, lowers: [String], link: EgressNetwork.Link, sandbox: Sandbox, out: String) async throws {
        let spec = SandboxSpec(command: command, lowerDirs: lowers,
                               environment: SandboxSpec.defaultEnvironment.merging(["GIT_TERMINAL_PROMPT": "0", "HOME": "/tmp"]) { _, new in new },
                               workingDirectory: "/", hostname: "build",
                               mounts: [SandboxMount(source: out, target: "/out", readOnly: false)] + EgressNetwork.hostFiles(certificates: true),
                               network: .namespace("/run/netns/" + link.namespace),
                               limits: SandboxLimits(memory: GitBuildpacks.limits.memory, pids: GitBuildpacks.limits.pids, cpus: GitBuildpacks.limits.cpus,
                                                     timeout: GitBuildpacks.limits.timeout, tmpSize: 64 << 20, upperSize: 64 << 20))
        let output = Mutex<[UInt8]>([])
        let result = try await sandbox.run(spec) { _, bytes in
            output.withLock { if $0.count < 8192 { $0 += bytes.prefix(8192 - $0.count) } }
        }
        let said = String(decoding: output.withLock { $0 }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        switch result.termination {
        case .exited(0): break
        case .exited(127): throw KbuildError(.unsatisfiable, "failed to clone \(what): the build image has no git")
        case .cancelled: throw CancellationError()
        case .timedOut: throw KbuildError(.unsatisfiable, "failed to clone \(what): it took over \(GitBuildpacks.limits.timeout)")
        default: throw KbuildError(.notFound, "failed to clone \(what): \(said.isEmpty ? result.summary : said)")
        }
    }

    /// Forgets an app's clones (`builds:cache:purge`): its next push clones again.
    public static func purge(app: String, refs: any RefStore, actor: String) async throws -> Int {
        try await refs.removeAll(under: try Schema.appBuildpacks(app), actor: actor)
    }
}
