public import KbuildCore
public import Keg
public import KbuildState
public import Sandbox
import Builds
import OCI
import Stacks
import Releases
import Cluster
import Foundation
import NIOPosix

/// The control plane's deploy pipeline. The git hook reads a push into the
/// Keg (it must: git keeps the pushed objects in a quarantine only the hook
/// sees) and hands it here through the API, over HTTP and SSH alike; from
/// then on a push is, top to bottom:
///
///     source record → build inputs → build (memoised, or queued for a worker,
///     its log followed) → image → release → release phase → rollout verdict
///
/// Each step's progress goes to `say`, which the API streams back to the
/// hook, and the hook to the pusher as `remote:` lines. A failed step throws:
/// the push is rejected, the branch does not move, and nothing that runs changes.
public struct DeployPipeline: Sendable {
    public let keg: Keg
    /// The other control planes' Kegs (sharing the state on etcd): a push's objects go to them before it is acknowledged.
    let replicas: (any KegUpstream)?
    public let refs: any RefStore
    /// A sandbox for cloning a git buildpack that `.buildpacks` names (once per app).
    public let sandbox: @Sendable () throws -> Sandbox
    /// How long a build may wait for a worker before the pusher is told none is connected.
    public let workerGrace: Duration
    /// How long a push waits for a worker to take its build before it is refused (the build stays queued).
    public let queueWait: Duration

    public init(keg: Keg, refs: any RefStore, sandbox: @escaping @Sendable () throws -> Sandbox,
                workerGrace: Duration = .seconds(2), queueWait: Duration = .seconds(600), replicas: (any KegUpstream)? = nil) {
        self.replicas = replicas
        self.keg = keg
        self.refs = refs
        self.sandbox = sandbox
        self.workerGrace = workerGrace
        self.queueWait = queueWait
    }

    /// What `abandoned` says when the control plane is stopping (the push is then accepted once its release is made).
    public static let stopping = "kbuild is stopping"

    /// What the hook needs before it reads a push of `app` into the Keg.
    public func terms(_ app: String) async throws -> API.PushTerms {
        let record = try await AppStore(keg: keg, refs: refs).get(app)
        let limits = try await AppLimits.get(app, keg: keg, refs: refs)
        var left: UInt64?, held: UInt64 = 0
        if let cap = limits.kegBytes {
            held = try await AppUsage.kegBytes(app, keg: keg, refs: refs)
            left = cap - min(cap, held)
        }
        return API.PushTerms(deployBranch: record.deployBranch, maxFileSize: record.maxFileSize, kegBytesLeft: left, kegBytes: limits.kegBytes,
                             kegBytesHeld: held)
    }

    /// Deploys `push` to `app`; returns the image. `abandoned` (why nobody waits
    /// for the push any more: its pusher hung up, the server stops) is asked
    /// while the build is awaited and before the release is made: an abandoned
    /// push deploys nothing and takes a build no worker has started off the queue.
    @discardableResult
    public func deploy(_ push: API.Push, app: String, say: @escaping @Sendable (String) -> Void,
                       abandoned: @escaping @Sendable () -> String? = { nil }) async throws -> KID {
        let started = ContinuousClock.now
        let record = try await check(push, app: app)
        var pushed = push.source
        // One deploy per app at a time, whichever process serves the push (the lock is the kernel's, on the app's
        // repository): a second push is told, not queued behind a build it cannot see.
        let lock = try DeployLock(path: AppStore(keg: keg, refs: refs).repository(app) + "/kbuild-deploy.lock", app: app)
        defer { lock.release() }
        let pusher = pushed.pushedBy
        pushed.pushedAt = Date()

        // The source: the pushed tree, within the app's Keg limit, named by the app and the commit.
        let limits = try await AppLimits.get(app, keg: keg, refs: refs)
        let held = limits.kegBytes == nil ? 0 : try await AppUsage.kegBytes(app, keg: keg, refs: refs)
        try limits.check(kegBytes: held + pushed.bytes, app: app)
        // On a control plane sharing its state, the source goes to the others before anything names it: a
        // worker of any of them can build it, and losing this machine loses no push.
        try await replicas?.publish([pushed.source], from: keg)
        let sourceRecord = try await Records.put(pushed, in: keg)
        try await refs.compareAndSwap(try Schema.source(app), to: sourceRecord, expecting: .any, actor: pusher)
        try await refs.compareAndSwap(try Schema.commit(pushed.commit), to: sourceRecord, expecting: .any, actor: pusher)
        say("       Source \(pushed.source.short): \(pushed.files) files, \(pushed.bytes >> 10) KiB, by \(pushed.author.terminalSafe)\n")

        // app.json's health checks are read before the build, so a bad one rejects the push at once.
        let healthchecks = try await NIOThreadPool.singleton.runIfActive { [keg, tree = pushed.source] () throws -> [String: HealthCheck] in
            guard let entry = try keg.tree(tree).entries.first(where: { $0.nameString == "app.json" }) else { return [:] }
            guard entry.type == .file, let kid = entry.kid else { throw KbuildError(.invalidArgument, "app.json must be a regular file") }
            return try AppJSON.healthchecks(try keg.logicalBytes(kid, maxWhole: 1 << 20))
        }

        // The build: memoised when these inputs were built before, else queued for a worker and followed.
        if let why = abandoned() { throw KbuildError(.io, "\(why) before the build: nothing was deployed") }
        if let replicas { try await fetchStack(record.stack, from: replicas) }
        let inputs = try await buildInputs(source: pushed.source, app: record, pusher: pusher, say: say)
        let build = inputs.kid
        let queue = BuildQueue(keg: keg, refs: refs)
        let result: BuildRecord
        // A build that started from an empty cache (no scope) depends on its inputs alone: any app may
        // reuse it, this one too once it has a cache of its own.
        var unscoped = inputs
        unscoped.cacheScope = nil
        let pure = inputs.cacheScope == nil ? nil : try await queue.result(unscoped.kid)
        if let done = [try await queue.result(build), pure].compactMap({ $0 }).first(where: { $0.status == .succeeded }) {
            let when = ISO8601DateFormatter().string(from: done.finishedAt)
            say("-----> Build \(done.build.short) memoised: same source, stack, buildpacks and build environment as the build of \(when); nothing to run\n")
            result = done
        } else {
            try limits.check(builds: try await AppUsage.builds(app, keg: keg, refs: refs), app: app)
            say("-----> Build \(build.short) queued\n")
            result = try await awaitBuild(BuildJob(inputs: inputs, app: app, limits: record.build, requestedBy: pusher), queue: queue,
                                          pusher: pusher, say: say, abandoned: abandoned)
        }
        if let why = abandoned() { throw KbuildError(.io, "\(why) before the release: nothing was deployed") }
        guard result.status == .succeeded else {
            throw KbuildError(.invalidArgument, "the build failed (\(result.error ?? "see the log above")); the push is rejected and nothing that runs changed (its log: kbuild logs \(build.short))")
        }

        // The image: the run image, the build's layer and the source's record, named as the app's latest.
        if let replicas { try await fetchBuilt(result, from: replicas) }
        let image = try await NIOThreadPool.singleton.runIfActive { [keg, pushed] in try AppImage.assemble(result, source: pushed, keg: keg) }
        // The image goes to the other control planes before the release names it (its layers and log went with the build).
        if let replicas { try await replicas.publish(try ImageStore(keg: keg).objectRoots(image), from: keg) }
        if limits.kegBytes != nil, let layer = result.layer {
            try limits.check(kegBytes: held + pushed.bytes + UInt64(max(0, layer.size)), app: app)
        }
        try await refs.compareAndSwap(try Schema.image(app), to: image, expecting: .any, actor: pusher)
        try await refs.compareAndSwap(try Schema.registryTag(app, "latest"), to: image, expecting: .any, actor: pusher)
        say("-----> Image \(image.short) (\(app):latest)\n")
        for type in result.processTypes.keys.sorted() { say("       \(type): \(result.processTypes[type]!)\n") }

        // The release: the image with the app's config and formation; the scheduler rolls it out.
        let release = try await ReleaseStore(keg: keg, refs: refs).deploy(
            app: app, image: image, processTypes: result.processTypes, healthchecks: healthchecks,
            sourceRecord: sourceRecord, build: build, commit: pushed.commit, actor: pusher)
        let formation = release.release.runnableTypes.map { "\($0)=\(release.release.formation[$0]!.quantity)" }.joined(separator: " ")
        say("-----> Released v\(release.version) (\(formation.isEmpty ? "no processes" : formation)); rolling out\n")
        let rolloutStarted = ContinuousClock.now

        do {
            try await followRelease(release, app: app, started: rolloutStarted, say: say, abandoned: abandoned)
        } catch let gone as Abandoned {
            // kbuild stopping (the hook is still there): the push is accepted, the release rolls out without it
            // watching. A pusher that hung up sees nothing either way.
            guard gone.why == Self.stopping else {
                throw KbuildError(.io, "\(gone.why); v\(gone.version) is released and rolls out without this push (kbuild ps \(app) shows how)")
            }
            say("-----> kbuild is stopping: v\(gone.version) is released and rolls out without this push watching (kbuild ps \(app) shows how)\n")
        }
        say("-----> Done in \(String(format: "%.1f", Self.seconds(ContinuousClock.now - started))) s: \(app) \(pushed.commit.prefix(7)) is image \(image)\n")
        return image
    }

    /// After the release: its release phase, if the Procfile has one, then the rollout's verdict.
    func followRelease(_ release: ReleaseEntry, app: String, started rolloutStarted: ContinuousClock.Instant,
                       say: @escaping @Sendable (String) -> Void, abandoned: @escaping @Sendable () -> String?) async throws {
        // The release phase, if the Procfile has one: on a node, before any process of the release starts.
        if let command = ReleasePhase.command(of: release.release) {
            let vars = try await ReleaseStore(keg: keg, refs: refs).configVars(release.release.config).vars
            say("-----> Running the release command: \(command.terminalSafe)\n")
            let phase = try await unlessAbandoned(abandoned, released: release.version) {
                try await followReleasePhase(app: app, release: release.kid, timeout: .seconds(ReleasePhase.timeout(vars) + 90), say: say)
            }
            switch phase?.state {
            case .succeeded?: say("-----> The release command succeeded; rolling out v\(release.version)\n")
            case .failed?:
                let why = phase?.reason ?? "it failed"
                // The scheduler reverts the app to what ran before; the push is rejected.
                let before = try await refs.get(try Schema.healthy(app)) != nil ? "what runs keeps running" : "nothing of \(app) runs yet"
                throw KbuildError(.invalidArgument, "the release command of v\(release.version) failed (\(why)); v\(release.version) is not rolled out and \(before) (its output: kbuild releases:output \(app) v\(release.version))")
            case .running?:
                say("-----> The release command of v\(release.version) has not ended (kbuild releases:output \(app) v\(release.version) shows it)\n")
            case nil:
                say("-----> The release command of v\(release.version) has not started: no node agent took it yet (it runs when one does)\n")
            }
        }

        // The verdict: every process healthy, reverted, or still going when the pusher stops waiting.
        let verdict = try await unlessAbandoned(abandoned, released: release.version) { [keg, refs] in
            try await RolloutWatch.wait(app: app, release: release.kid, keg: keg, refs: refs, timeout: .seconds(90))
        }
        switch verdict {
        case .done(let r):
            let took = String(format: "%.1f", Self.seconds(ContinuousClock.now - rolloutStarted))
            switch r.state {
            case .converged: say("-----> v\(release.version) is live: every process healthy in \(took) s\n")
            case .reverted: say(" !     v\(release.version) failed: \(r.reason ?? "unhealthy"); reverted to the last healthy release (now v\(r.revertedBy ?? 0))\n")
            case .failed: say(" !     v\(release.version) failed: \(r.reason ?? "unhealthy"), and no earlier release was healthy to go back to\n")
            case .unschedulable: say(" !     v\(release.version) cannot be placed: \(r.reason ?? ""); what ran before keeps running\n")
            }
        case .noNodes: say("-----> No node agent is up: v\(release.version) rolls out when one starts\n")
        case .timedOut: say("-----> v\(release.version) is still rolling out (kbuild ps \(app) shows how it goes)\n")
        }
    }

    /// A push the hook handed over must be of this app, to its deploy branch,
    /// of a commit, with its tree in the Keg. Returns the app.
    @discardableResult
    public func check(_ push: API.Push, app: String) async throws -> AppRecord {
        let record = try await AppStore(keg: keg, refs: refs).get(app)
        let source = push.source
        guard source.app == record.name else {
            throw KbuildError(.invalidArgument, "the push names app \(source.app.debugQuoted), not \(record.name)")
        }
        guard source.ref == "refs/heads/\(record.deployBranch)" else {
            throw KbuildError(.invalidArgument, "the push is to \(source.ref.debugQuoted), not \(record.name)'s deploy branch \(record.deployBranch)")
        }
        guard source.commit.count == 40 || source.commit.count == 64, source.commit.allSatisfy(\.isHexDigit) else {
            throw KbuildError(.invalidArgument, "the push names commit \(source.commit.debugQuoted), not a git object id")
        }
        guard keg.contains(source.source), (try? keg.tree(source.source)) != nil else {
            throw KbuildError(.notFound, "the pushed tree \(source.source) is not in the Keg: the hook reads it in before it hands the push over")
        }
        return record
    }

    /// Runs a step that follows a release already made, until it ends or
    /// nobody waits for the push any more (then the release stands and rolls
    /// out; only the following stops).
    func unlessAbandoned<T: Sendable>(_ abandoned: @escaping @Sendable () -> String?, released version: Int64,
                                      _ step: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await step() }
            group.addTask {
                while abandoned() == nil { try await Task.sleep(for: .seconds(1)) }
                return nil
            }
            defer { group.cancelAll() }
            if let done = try await group.next(), let value = done { return value }
            throw Abandoned(why: abandoned() ?? "the push was abandoned", version: version)
        }
    }

    /// Brings the app's stack (its run and build images: manifest, config, layer trees) into this Keg
    /// when another control plane made it.
    func fetchStack(_ name: String, from replicas: any KegUpstream) async throws {
        for stack in [name, name + StackStore.buildSuffix] {
            guard let ref = try await refs.get(try Schema.stack(stack)) else { continue }
            try await replicas.fetch(ref.kid, into: keg)
            let manifest = try ImageStore(keg: keg).manifest(ref.kid)
            for kid in [try manifest.config.kid()] + (try ImageStore(keg: keg).layerTrees(manifest)) { try await replicas.fetch(kid, into: keg) }
        }
    }

    /// Brings what the image is made of into this Keg when a worker of another control plane built it:
    /// the stack's run image (manifest, config, layer trees), the build's layers and its log.
    func fetchBuilt(_ result: BuildRecord, from replicas: any KegUpstream) async throws {
        try await replicas.fetch(result.inputs.stack, into: keg)
        let stack = try ImageStore(keg: keg).manifest(result.inputs.stack)
        var kids = [try stack.config.kid()] + (try ImageStore(keg: keg).layerTrees(stack))
        for layer in [result.layer].compactMap({ $0 }) + (result.dependencyLayers ?? []) {
            if let tree = layer.annotations?[treeAnnotation] { kids.append(try KID(parsing: tree)) }
        }
        if let log = result.log { kids.append(log) }
        for kid in kids { try await replicas.fetch(kid, into: keg) }
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}

/// Nobody waits for a push any more, after its release was made: the release stands.
struct Abandoned: Error {
    let why: String
    let version: Int64
}

/// An exclusive `flock` on a file in the app's repository, held while a push deploys.
struct DeployLock {
    let fd: Int32

    init(path: String, app: String) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KbuildError.syscall("open", path, verb: "lock the deploy of \(app)") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            close(fd)
            if busy {
                throw KbuildError(.conflict, "another push to \(app) is being built and deployed; push again when it is done (kbuild releases \(app))")
            }
            throw KbuildError.syscall("flock", path, verb: "lock the deploy of \(app)")
        }
    }

    func release() { close(fd) }
}
