import KbuildCore
public import Keg
public import KbuildState
public import Sandbox
import OCI
import Stacks
import Foundation
import Synchronization

/// Runs one build: the buildpacks' `bin/detect`, `bin/compile` and
/// `bin/release`, each in a sandbox over the stack, with the app at /app
/// (BUILD_DIR), the app's cache at /cache and the build config at /env
/// (read-only), the buildpacks read-only under /buildpacks. The network the
/// inputs say: `egress` (a namespace of the build's own whose only way out
/// is NAT to the outside, as app processes have) or `none` (loopback only);
/// memory, pids, CPU and one deadline for the whole build. What is in /app afterwards becomes the app layer; writes
/// anywhere else land in the sandbox's scratch layer and are dropped.
public struct Builder: Sendable {
    /// This machine's Keg: the build's inputs are checked out from it and its outputs stored in it.
    public let keg: Keg
    /// Where records go: the Keg, or the control plane's API for a worker that joined.
    public let records: any RecordContent
    public let refs: any RefStore
    /// The control plane's Keg, for a worker on another machine: inputs are
    /// fetched from it before the build, and outputs published to it before any ref names them.
    public let upstream: (any KegUpstream)?
    public let sandbox: Sandbox
    /// Where `egress` builds get their networks (nil: such builds fail).
    public let egress: EgressNetwork?
    /// Who runs the builds (host and pid), for the record.
    public let worker: String

    public init(keg: Keg, records: (any RecordContent)? = nil, refs: any RefStore, upstream: (any KegUpstream)? = nil,
                sandbox: Sandbox, egress: EgressNetwork?, worker: String = Builder.defaultWorkerName) {
        self.keg = keg
        self.records = records ?? keg
        self.refs = refs
        self.upstream = upstream
        self.sandbox = sandbox
        self.egress = egress
        self.worker = worker
    }

    public static var defaultWorkerName: String {
        "\(ProcessInfo.processInfo.hostName)/\(getpid())"
    }

    /// Runs `job` and returns its record (succeeded or failed); throws only
    /// when the build could not be attempted or recorded at all, or was
    /// cancelled (then nothing is recorded).
    public func run(_ job: BuildJob, log: BuildLog) async throws -> BuildRecord {
        let started = Date()
        let build = job.inputs.kid
        let dirs = keg.dataDir.root.path + "/builds"
        let work = "\(dirs)/work/\(build.hex.prefix(12))-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        for dir in [dirs, dirs + "/work"] where mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw KbuildError.syscall("mkdir", dir, verb: "prepare build \(build.short)")
        }
        // Everything the build writes is on a disk of its own, of the app's size.
        let disk = try await ScratchDisk.make(at: work, size: job.limits.disk)
        // And, with egress, it reaches the outside through a network of its own.
        let network: EgressNetwork.Held?
        do {
            network = try await makeNetwork(job.inputs.network)
        } catch {
            await disk.remove()
            throw error
        }

        var record = BuildRecord(build: build, inputs: job.inputs, app: job.app, status: .failed, error: nil, log: nil, layer: nil,
                                 used: [], processTypes: [:], configVars: [:], worker: worker, startedAt: started,
                                 finishedAt: started, links: [])
        do {
            try await steps(job, work: work, network: network?.link, log: log, record: &record)
            record.status = .succeeded
            log.step("Build \(build.short) succeeded in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        } catch is CancellationError {
            // This worker is stopping: no result is recorded, so the claim runs out and
            // another worker (or the pusher's hook) builds it again.
            log.step("Build interrupted: this worker is stopping")
            if let network { await egress?.remove(network) }
            await disk.remove()
            throw CancellationError()
        } catch {
            let message = (error as? KbuildError)?.message ?? "\(error)"
            record.error = message
            log.write(Array("\n !     \(message)\n !     Build failed\n".utf8))
        }
        if let network { await egress?.remove(network) }
        await disk.remove()
        record.finishedAt = Date()
        record.log = try keg.put(path: log.path)
        let made = [record.log, record.layer.flatMap { try? $0.kid() }, record.layer?.annotations?["dev.kbuild.tree"].flatMap { try? KID(parsing: $0) }]
        record.links = (made + [job.inputs.source, job.inputs.stack, job.inputs.buildImage]).compactMap { $0 } + job.inputs.buildpacks.map(\.tree) + record.links
        // A worker on another machine: what the record names must be on the control plane before the record is.
        try await upstream?.publish(made.compactMap { $0 }, from: keg)
        return record
    }

    /// The build's network: nil for `none`; for `egress`, a namespace held by this process.
    func makeNetwork(_ mode: String) async throws -> EgressNetwork.Held? {
        switch mode {
        case BuildNetwork.none.rawValue: return nil
        case BuildNetwork.egress.rawValue:
            guard let egress else {
                throw KbuildError(.unsatisfiable, "this build asks for the network (egress), which this worker cannot give: run it in `kbuild up` or `kbuild worker` as root")
            }
            // The rules are this kbuild's (one table, replaced whole): a worker of its own makes sure they are there.
            try await egress.installFirewall()
            return try await egress.makeHeld()
        default:
            throw KbuildError(.invalidArgument, "unknown build network \(mode.debugQuoted): want egress or none")
        }
    }

    private func steps(_ job: BuildJob, work: String, network link: EgressNetwork.Link?, log: BuildLog, record: inout BuildRecord) async throws {
        let inputs = job.inputs
        let deadline = ContinuousClock.now + .milliseconds(Int64(job.limits.timeout * 1000))
        let stacks = StackStore(keg: keg, refs: refs)
        let images = ImageStore(keg: keg)
        let buildImage = inputs.buildImage ?? inputs.stack
        let cached = inputs.cacheScope == nil ? nil : try await refs.get(try Schema.buildCache(job.app))
        if let upstream {
            log.step("Fetching the build's inputs from the control plane")
            try await fetchInputs(inputs, cache: cached?.kid, from: upstream)
        }
        let stackManifest = try images.manifest(buildImage)
        let stackConfig = try images.config(of: stackManifest).config
        let stack = Stack(name: inputs.stackName, image: buildImage, manifest: stackManifest, layers: try images.layerTrees(stackManifest))
        log.step("Building on the \(inputs.stackName) stack (\(inputs.buildImage == nil ? "" : "build image \(buildImage.short), ")run image \(inputs.stack.short)), source \(inputs.source.short)")

        // The build's directories, under the data dir (only root can reach it, so the
        // sandbox's root may own what it writes there).
        let root = work + "/root", app = root + "/app", cache = work + "/cache", env = work + "/env"
        guard chmod(work, 0o755) == 0 else { throw KbuildError.syscall("chmod", work, verb: "prepare the build") }
        for dir in [root] where mkdir(dir, 0o755) != 0 { throw KbuildError.syscall("mkdir", dir, verb: "prepare the build") }
        try keg.get(inputs.source, to: app)
        // The app's cache only for a build scoped to it: an unscoped build (its KID shared by
        // any app that pushes the same tree) depends on its inputs alone.
        if let cached, keg.contains(cached.kid) {
            try keg.get(cached.kid, to: cache)
        } else if mkdir(cache, 0o755) != 0 {
            throw KbuildError.syscall("mkdir", cache, verb: "prepare the build cache")
        }
        guard mkdir(env, 0o755) == 0 else { throw KbuildError.syscall("mkdir", env, verb: "prepare the build environment") }
        for (key, value) in inputs.environment {
            guard BuildFiles.isEnvironmentName(key) else { throw KbuildError(.invalidArgument, "build config var \(key.debugQuoted) is not a valid environment name") }
            try Data(value.utf8).write(to: URL(fileURLWithPath: env + "/" + key))
        }

        var mounts = [
            SandboxMount(source: app, target: "/app", readOnly: false),
            SandboxMount(source: cache, target: "/cache", readOnly: false),
            SandboxMount(source: env, target: "/env", readOnly: true),
        ]
        for pack in inputs.buildpacks {
            mounts.append(SandboxMount(source: try stacks.checkout(pack.tree), target: "/buildpacks/\(pack.name)", readOnly: true))
        }
        // DNS through the host's resolvers, as app processes have it, and the
        // host's certificate authorities: a build's egress goes through the
        // host's network, so it trusts what the host trusts (a proxy's CA
        // added to the host's store included).
        if link != nil { mounts += EgressNetwork.hostFiles(certificates: true) }
        var environment = SandboxSpec.defaultEnvironment.merging(stackConfig?.environment ?? [:]) { _, stack in stack }
        environment["STACK"] = inputs.stackName
        let lowers = try stacks.lowerDirs(for: stack)
        let network: SandboxNetwork = link.map { .namespace("/run/netns/" + $0.namespace) } ?? .none
        log.detail(link == nil ? "Network: none (loopback only)" : "Network: egress (the outside only, through NAT)")

        func spec(_ command: [String], mounts stepMounts: [SandboxMount]? = nil, environment extra: [String: String] = [:]) throws -> SandboxSpec {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw KbuildError(.unsatisfiable, "the build ran out of time (limit \(Int(job.limits.timeout)) s)") }
            return SandboxSpec(command: command, lowerDirs: lowers, environment: environment.merging(extra) { _, new in new }, workingDirectory: "/app",
                               hostname: "build", mounts: stepMounts ?? mounts, network: network,
                               limits: SandboxLimits(memory: job.limits.memory, pids: job.limits.pids, cpus: job.limits.cpus,
                                                     timeout: left, tmpSize: 1 << 30, upperSize: 2 << 30))
        }
        func check(_ result: SandboxResult, _ what: String) throws {
            switch result.termination {
            case .exited(0): return
            case .cancelled: throw CancellationError()
            case .timedOut: throw KbuildError(.unsatisfiable, "\(what) did not finish within the build's time limit (\(Int(job.limits.timeout)) s)")
            case .outOfMemory: throw KbuildError(.unsatisfiable, "\(what) ran out of memory (limit \(job.limits.memory >> 20) MiB)")
            default: throw KbuildError(.invalidArgument, "\(what) failed: \(result.summary)")
            }
        }

        // Detect: the first buildpack that says yes, or every chosen one.
        var chosen: [Buildpack] = []
        if inputs.detect {
            for pack in inputs.buildpacks {
                let out = Mutex<[UInt8]>([])
                let result = try await sandbox.run(try spec(["/buildpacks/\(pack.name)/bin/detect", "/app"])) { stream, bytes in
                    if stream == .stdout { out.withLock { $0 += bytes.prefix(max(0, 4096 - $0.count)) } } else { log.write(bytes) }
                }
                if result.termination == .timedOut || result.termination == .cancelled { try check(result, "bin/detect of \(pack.name)") }
                if result.termination == .exited(0) {
                    let name = String(decoding: out.withLock { $0 }, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? pack.name
                    log.step("\(name.trimmingCharacters(in: .whitespaces)) app detected (buildpack \(pack.name))")
                    chosen = [pack]
                    break
                }
            }
            guard !chosen.isEmpty else {
                throw KbuildError(.notFound, "no buildpack detected this app (tried \(inputs.buildpacks.map(\.name).joined(separator: ", "))): add a Procfile, or name buildpacks in .buildpacks")
            }
        } else {
            chosen = inputs.buildpacks
            log.step("Using the buildpacks named in .buildpacks: \(chosen.map(\.name).joined(separator: ", "))")
        }
        record.used = chosen
        // Several buildpacks: each gets a copy of its own, writable, so that one can leave an
        // `export` file for those after it (Heroku's multi-buildpack contract).
        if chosen.count > 1 {
            for pack in chosen {
                let copy = work + "/buildpacks/" + pack.name
                try FileManager.default.createDirectory(atPath: work + "/buildpacks", withIntermediateDirectories: true)
                try keg.get(pack.tree, to: copy)
                mounts = mounts.map { $0.target == "/buildpacks/\(pack.name)" ? SandboxMount(source: copy, target: $0.target, readOnly: false) : $0 }
            }
        }
        var exports: [String] = []
        var dependencyDirectories: [[String]] = []
        /// A step's command, after sourcing the exports of the buildpacks before it.
        func exported(_ command: [String]) -> [String] {
            guard !exports.isEmpty else { return command }
            let sources = exports.map { ". \($0)" }.joined(separator: " && ")
            return ["/bin/sh", "-c", sources + " && exec \"$0\" \"$@\""] + command
        }

        // Compile, then release, buildpack by buildpack.
        var release = BuildFiles.Release()
        for (number, pack) in chosen.enumerated() {
            let bin = "/buildpacks/\(pack.name)/bin/"
            // Its dependencies as a layer of their own, when it says how (`bin/dependencies`).
            var stepMounts = mounts, stepEnvironment: [String: String] = [:]
            if try hasExecutable(pack.tree, "dependencies"),
               let deps = try await dependencyLayer(pack, job: job, work: work + "/deps-\(number)", cache: cache, mounts: mounts,
                                                    spec: spec, check: check, log: log) {
                let directory = "/app/" + deps.declaration.directory.joined(separator: "/")
                // The mount point, in /app as earlier steps left it (no symlink on the way: this runs as host root).
                try Builder.refuseSymlinks(under: app, deps.declaration.directory, what: directory)
                try FileManager.default.createDirectory(atPath: app + "/" + deps.declaration.directory.joined(separator: "/"), withIntermediateDirectories: true)
                dependencyDirectories.append(deps.declaration.directory)
                let tree = try BuildpackStore.subtree(deps.record.tree, path: ["app"] + deps.declaration.directory, keg: keg)
                stepMounts.append(SandboxMount(source: try stacks.checkout(tree), target: directory, readOnly: true))
                stepEnvironment["KBUILD_DEPENDENCIES_LAYER"] = directory
                record.dependencyLayers = (record.dependencyLayers ?? []) + [deps.record.layer]
                record.links += [deps.record.tree, try deps.record.layer.kid()]
            }
            try check(try await sandbox.run(try spec(exported([bin + "compile", "/app", "/cache", "/env"]), mounts: stepMounts, environment: stepEnvironment)) {
                _, bytes in log.write(bytes)
            }, "bin/compile of \(pack.name)")
            if chosen.count > 1, FileManager.default.fileExists(atPath: work + "/buildpacks/\(pack.name)/export") {
                exports.append("/buildpacks/\(pack.name)/export")
                log.detail("\(pack.name) left an export file: the buildpacks after it start from it")
            }
            guard try hasExecutable(pack.tree, "release") else { continue }
            let out = Mutex<[UInt8]>([])
            let result = try await sandbox.run(try spec(exported([bin + "release", "/app"]))) { stream, bytes in
                if stream == .stdout { out.withLock { $0 += bytes.prefix(max(0, (1 << 20) - $0.count)) } } else { log.write(bytes) }
            }
            try check(result, "bin/release of \(pack.name)")
            let parsed = try BuildFiles.parseRelease(String(decoding: out.withLock { $0 }, as: UTF8.self))
            release.configVars.merge(parsed.configVars) { _, new in new }
            release.processTypes.merge(parsed.processTypes) { _, new in new }
        }

        // The app layer: /app as the buildpacks left it (read back through the Keg,
        // never by following what the build wrote).
        // A dependency directory is the layer's: what the tree had there (a committed .venv or
        // node_modules, hidden under the mount during the build) must not shadow it in the image.
        for dir in dependencyDirectories {
            try Builder.refuseSymlinks(under: app, dir, what: "/app/" + dir.joined(separator: "/"))
            let path = app + "/" + dir.joined(separator: "/")
            try? FileManager.default.removeItem(atPath: path)
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        log.step("Discovering process types")
        let rootTree: KID, layer: Descriptor
        do {
            (rootTree, layer) = try ImageStore(keg: keg).putLayer(directory: root, dropSetID: true, maxBytes: job.limits.disk)
        } catch let error as KbuildError where error.code == .tooLarge {
            throw KbuildError(.tooLarge, "the app is over the build disk of \(job.limits.disk >> 20) MiB (sparse files count at their full size): \(error.message)")
        }
        let appTree = try BuildpackStore.subtree(rootTree, path: ["app"], keg: keg)

        var processTypes = release.processTypes
        if let entry = try keg.tree(appTree).entries.first(where: { $0.nameString == "Procfile" }) {
            guard entry.type == .file, let kid = entry.kid else { throw KbuildError(.invalidArgument, "Procfile must be a regular file") }
            for (type, command) in try BuildFiles.parseProcfile(String(decoding: try keg.logicalBytes(kid, maxWhole: 1 << 20), as: UTF8.self)) {
                processTypes[type] = command
            }
            log.detail("Procfile declares types -> \(processTypes.keys.sorted().joined(separator: ", "))")
        } else {
            log.detail(processTypes.isEmpty ? "No Procfile and no default process types" : "Default types for buildpack -> \(processTypes.keys.sorted().joined(separator: ", "))")
        }
        record.processTypes = processTypes
        record.configVars = release.configVars
        record.layer = layer
        log.step("App layer \(try layer.kid().short) (\(layer.size >> 10) KiB)")

        // The cache is kept up to half the build disk; past that it is dropped
        // (evicted whole, as Heroku clears an oversized cache) and the next build starts without one.
        do {
            let cacheTree = try keg.put(path: cache, skipSpecialFiles: true, dropSetID: true, maxBytes: job.limits.disk / 2)
            try await upstream?.publish([cacheTree], from: keg)
            try await refs.compareAndSwap(try Schema.buildCache(job.app), to: cacheTree, expecting: .any, actor: worker)
        } catch let error as KbuildError where error.code == .tooLarge {
            log.detail("The build cache is over \(job.limits.disk >> 21) MiB (half the build disk): not kept; the next build starts without it")
            _ = try? await refs.compareAndSwap(try Schema.buildCache(job.app), to: nil, expecting: .any, actor: worker)
        }
    }

    /// A buildpack's dependency layer: reused when one was made from the same
    /// `DependencyLayers.Key`, else installed in a sandbox that holds only the
    /// files `bin/dependencies` names. Nil when the buildpack declares none
    /// (its compile then installs everything, as on Heroku).
    private func dependencyLayer(_ pack: Buildpack, job: BuildJob, work: String, cache: String, mounts: [SandboxMount],
                                 spec: ([String], [SandboxMount]?, [String: String]) throws -> SandboxSpec,
                                 check: (SandboxResult, String) throws -> Void,
                                 log: BuildLog) async throws -> (declaration: DependencyLayers.Declaration, record: DependencyLayers.Record)? {
        let bin = "/buildpacks/\(pack.name)/bin/"
        let out = Mutex<[UInt8]>([])
        let result = try await sandbox.run(try spec([bin + "dependencies", "/app"], nil, [:])) { stream, bytes in
            if stream == .stdout { out.withLock { $0 += bytes.prefix(max(0, (64 << 10) - $0.count)) } } else { log.write(bytes) }
        }
        if result.termination == .timedOut || result.termination == .cancelled { try check(result, "bin/dependencies of \(pack.name)") }
        guard result.termination == .exited(0) else { return nil }
        let declaration = try DependencyLayers.parse(String(decoding: out.withLock { $0 }, as: UTF8.self))
        let directory = "/app/" + declaration.directory.joined(separator: "/")
        let inputs = work + "/inputs"
        let files = try DependencyLayers.materialise(declaration, source: job.inputs.source, keg: keg, at: inputs + "/app")
        let key = DependencyLayers.Key(buildImage: job.inputs.buildImage ?? job.inputs.stack, runImage: job.inputs.stack, buildpack: pack.tree,
                                       directory: directory, files: files, network: job.inputs.network,
                                       environment: job.inputs.environment, epoch: job.inputs.cacheEpoch).kid
        let named = declaration.files.map { $0.joined(separator: "/") }.joined(separator: ", ")
        if let found = try await DependencyLayers.find(key, app: job.inputs.cacheScope, records: records, keg: keg, refs: refs, upstream: upstream) {
            log.step("Dependencies: layer \(try found.layer.kid().short) reused, installed before from the same \(named), build image and buildpack; nothing to install")
            return (declaration, found)
        }
        log.step("Dependencies: installing from \(named) into \(directory), a layer of its own")
        let clean = ((try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []).isEmpty
        // The same mounts, but /app holds the declared files alone and every buildpack is its
        // stored tree, read-only: nothing an earlier step of this build changed reaches the layer.
        let stacks = StackStore(keg: keg, refs: refs)
        let installMounts = try mounts.map { m -> SandboxMount in
            if m.target == "/app" { return SandboxMount(source: inputs + "/app", target: "/app", readOnly: false) }
            if let pack = job.inputs.buildpacks.first(where: { "/buildpacks/\($0.name)" == m.target }) {
                return SandboxMount(source: try stacks.checkout(pack.tree), target: m.target, readOnly: true)
            }
            return m
        }
        try check(try await sandbox.run(try spec([bin + "compile", "/app", "/cache", "/env"], installMounts, ["KBUILD_DEPENDENCIES_ONLY": "1"])) { _, bytes in
            log.write(bytes)
        }, "bin/compile of \(pack.name) (its dependencies)")
        // The layer holds the directory alone, at its place under /.
        let made = inputs + "/app/" + declaration.directory.joined(separator: "/")
        let layerRoot = work + "/layer", parent = layerRoot + "/app/" + declaration.directory.dropLast().joined(separator: "/")
        // Nothing installed is an empty layer. What the install left is the tenant's: no step of the
        // path to it may be a symlink (a rename or mkdir would follow it out of the build).
        try Builder.refuseSymlinks(under: inputs + "/app", declaration.directory, what: directory)
        try FileManager.default.createDirectory(atPath: made, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        guard rename(made, layerRoot + "/app/" + declaration.directory.joined(separator: "/")) == 0 else {
            throw KbuildError.syscall("rename", made, verb: "make the dependency layer")
        }
        let tree: KID, layer: Descriptor
        do {
            (tree, layer) = try ImageStore(keg: keg).putLayer(directory: layerRoot, dropSetID: true, maxBytes: job.limits.disk)
        } catch let error as KbuildError where error.code == .tooLarge {
            throw KbuildError(.tooLarge, "the dependencies are over the build disk of \(job.limits.disk >> 20) MiB: \(error.message)")
        }
        let record = DependencyLayers.Record(key: key, tree: tree, layer: layer, directory: directory, clean: clean, madeAt: Date())
        try await upstream?.publish([tree, try layer.kid()], from: keg)
        try await DependencyLayers.store(record, app: job.app, records: records, refs: refs, actor: worker)
        log.detail("Layer \(try layer.kid().short) (\(layer.size >> 10) KiB)\(clean ? "" : ", kept for this app: it was installed with its build cache")")
        try? FileManager.default.removeItem(atPath: work)
        return (declaration, record)
    }

    /// Brings what a build reads into this machine's Keg: the source, the
    /// stack's build and run images (manifest, config, layer trees), the
    /// buildpacks and the app's cache. Each object is checked against its KID.
    private func fetchInputs(_ inputs: BuildInputs, cache: KID?, from upstream: any KegUpstream) async throws {
        // A cache the control plane no longer holds is no cache (the build starts without one).
        if let cache { _ = try? await upstream.fetch(cache, into: keg) }
        var kids = [inputs.source] + inputs.buildpacks.map(\.tree)
        let images = ImageStore(keg: keg)
        for image in Set([inputs.stack, inputs.buildImage ?? inputs.stack]) {
            try await upstream.fetch(image, into: keg)
            let manifest = try images.manifest(image)
            kids += [try manifest.config.kid()] + (try images.layerTrees(manifest))
        }
        for kid in kids { try await upstream.fetch(kid, into: keg) }
    }

    /// Refuses a path under `base` (as components) that passes through a symlink or a
    /// non-directory: host-side mkdir, rename and remove must stay inside the build.
    static func refuseSymlinks(under base: String, _ components: [String], what: String) throws {
        var path = base
        for (i, part) in components.enumerated() {
            path += "/" + part
            var st = stat()
            guard lstat(path, &st) == 0 else { return }  // the rest does not exist yet
            let type = st.st_mode & S_IFMT
            guard type != S_IFLNK, type == S_IFDIR || i == components.count - 1 else {
                throw KbuildError(.invalidArgument, "\(what) passes through \(type == S_IFLNK ? "a symlink" : "a file") at /app/\(components[...i].joined(separator: "/")): a dependency directory must be a real directory")
            }
            if i == components.count - 1, type != S_IFDIR {
                throw KbuildError(.invalidArgument, "\(what) is not a directory")
            }
        }
    }

    private func hasExecutable(_ pack: KID, _ step: String) throws -> Bool {
        guard let bin = try keg.tree(pack).entries.first(where: { $0.nameString == "bin" }), let kid = bin.kid, bin.type == .directory,
              let e = try keg.tree(kid).entries.first(where: { $0.nameString == step })
        else { return false }
        return e.type == .file && e.mode & 0o111 != 0
    }
}
