public import KbuildCore
public import Keg
public import KbuildState
public import Sandbox
import Builds
import GitSource
import Releases
import Cluster
import OCI
import Stacks
import Foundation
import Synchronization

/// The pre-receive hook of an app's repository: for a push to the deploy
/// branch, reads the pushed tree into the Keg (the source KID), records the
/// push, has a build worker build it (or finds the build memoised) while
/// streaming the log back to the pusher, and makes the image. A failed build rejects the push,
/// so the branch does not move and nothing that runs changes.
public struct PushHook: Sendable {
    public struct Update: Sendable, Equatable {
        public var old: String
        public var new: String
        public var ref: String
    }

    public let keg: Keg
    public let refs: any RefStore
    public let app: String
    public let pusher: String
    public let repositoryURL: String
    /// Text for the pusher (git shows it as `remote:` lines).
    public let say: @Sendable (String) -> Void
    /// A sandbox for cloning a git buildpack that `.buildpacks` names (once per app).
    public let sandbox: @Sendable () throws -> Sandbox
    /// How long a build may wait for a worker before the pusher is told none is connected.
    public let workerGrace: Duration
    /// How long a push waits for a worker to take its build before it is refused (the build stays queued).
    public let queueWait: Duration
    /// Whether the pusher is gone (it hung up, or the HTTP server that runs git died): asked each second while the
    /// build is awaited, and before the release is made (a push whose pusher left deploys nothing).
    public let pusherGone: @Sendable () -> Bool

    public init(keg: Keg, refs: any RefStore, app: String, pusher: String, repositoryURL: String,
                workerGrace: Duration = .seconds(2), queueWait: Duration = .seconds(600),
                pusherGone: @escaping @Sendable () -> Bool = { false },
                say: @escaping @Sendable (String) -> Void, sandbox: @escaping @Sendable () throws -> Sandbox) {
        self.pusherGone = pusherGone
        self.keg = keg
        self.refs = refs
        self.app = app
        self.pusher = pusher
        self.repositoryURL = repositoryURL
        self.workerGrace = workerGrace
        self.queueWait = queueWait
        self.say = say
        self.sandbox = sandbox
    }

    /// `old new ref` lines, as git gives them on stdin.
    public static func parseUpdates(_ text: String) throws -> [Update] {
        try text.split(separator: "\n").map { line in
            let parts = line.split(separator: " ")
            guard parts.count == 3 else { throw KbuildError(.invalidArgument, "failed to read the pushed refs: malformed line \(String(line).debugQuoted)") }
            return Update(old: String(parts[0]), new: String(parts[1]), ref: String(parts[2]))
        }
    }

    static func isZero(_ sha: String) -> Bool { sha.allSatisfy { $0 == "0" } }

    /// Returns the image built for the deploy branch, if it was pushed; throws to reject the push.
    @discardableResult
    public func run(_ updates: [Update]) async throws -> KID? {
        let record = try await AppStore(keg: keg, refs: refs).get(app)
        let deployRef = "refs/heads/\(record.deployBranch)"
        var image: KID?
        for update in updates {
            if update.ref == deployRef {
                guard !PushHook.isZero(update.new) else {
                    throw KbuildError(.invalidArgument, "refusing to delete \(record.deployBranch), the deploy branch of \(app)")
                }
                image = try await deploy(update, app: record)
            } else if update.ref.hasPrefix("refs/heads/") && !PushHook.isZero(update.new) {
                let branch = update.ref.dropFirst("refs/heads/".count)
                say("-----> Pushed to \(branch), not \(record.deployBranch): stored, not built. Push to \(record.deployBranch) to deploy (git push kbuild \(branch):\(record.deployBranch))\n")
            }
        }
        return image
    }

    func deploy(_ update: Update, app record: AppRecord) async throws -> KID {
        let started = ContinuousClock.now
        // One deploy per app at a time: a second push is told, not queued behind
        // a build it cannot see. The lock is the kernel's, so it goes with the
        // hook however the hook ends (a pusher that hangs up, a kill -9).
        let lock = try PushLock(path: AppStore(keg: keg, refs: refs).repository(app) + "/kbuild-deploy.lock", app: app)
        defer { lock.release() }
        say("-----> Receiving \(update.new.prefix(7)) for \(app)\n")
        let limits = try await AppLimits.get(app, keg: keg, refs: refs)
        let held = limits.kegBytes == nil ? 0 : try await AppUsage.kegBytes(app, keg: keg, refs: refs)
        try limits.check(kegBytes: held, app: app)
        let source = try GitSource.importTree(repository: nil, revision: update.new, into: keg,
                                              limits: SourceLimits(maxFileSize: record.maxFileSize))
        try limits.check(kegBytes: held + source.bytes, app: app)
        let pushed = SourceRecord(app: app, source: source.tree, commit: source.commit, author: source.author, authorEmail: source.authorEmail,
                                  message: source.message, committedAt: source.committedAt, pushedBy: pusher, pushedAt: Date(),
                                  ref: update.ref, repository: repositoryURL, files: source.files, bytes: source.bytes)
        let sourceRecord = try await Records.put(pushed, in: keg)
        try await refs.compareAndSwap(try Schema.source(app), to: sourceRecord, expecting: .any, actor: pusher)
        try await refs.compareAndSwap(try Schema.commit(source.commit), to: sourceRecord, expecting: .any, actor: pusher)
        say("       Source \(source.tree.short): \(source.files) files, \(source.bytes >> 10) KiB, by \(source.author.terminalSafe)\n")

        // app.json's health checks are read before the build, so a bad one rejects the push at once.
        var healthchecks: [String: HealthCheck] = [:]
        if let entry = try keg.tree(source.tree).entries.first(where: { $0.nameString == "app.json" }) {
            guard entry.type == .file, let kid = entry.kid else { throw KbuildError(.invalidArgument, "app.json must be a regular file") }
            healthchecks = try AppJSON.healthchecks(try keg.logicalBytes(kid, maxWhole: 1 << 20))
        }
        let inputs = try await buildInputs(source: source.tree, app: record)
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
            result = try await awaitBuild(build, job: BuildJob(inputs: inputs, app: app, limits: record.build, requestedBy: pusher), queue: queue)
        }
        guard !pusherGone() else { throw KbuildError(.io, "the pusher hung up before the release: nothing was deployed") }
        guard result.status == .succeeded else {
            throw KbuildError(.invalidArgument, "the build failed (\(result.error ?? "see the log above")); the push is rejected and nothing that runs changed (its log: kbuild logs \(build.short))")
        }
        let image = try AppImage.assemble(result, source: pushed, keg: keg)
        if limits.kegBytes != nil, let layer = result.layer {
            try limits.check(kegBytes: held + source.bytes + UInt64(max(0, layer.size)), app: app)
        }
        try await refs.compareAndSwap(try Schema.image(app), to: image, expecting: .any, actor: pusher)
        try await refs.compareAndSwap(try Schema.registryTag(app, "latest"), to: image, expecting: .any, actor: pusher)
        let types = result.processTypes.keys.sorted().map { "\($0): \(result.processTypes[$0]!)" }
        say("-----> Image \(image.short) (\(app):latest)\n")
        for line in types { say("       \(line)\n") }
        let release = try await ReleaseStore(keg: keg, refs: refs).deploy(
            app: app, image: image, processTypes: result.processTypes, healthchecks: healthchecks,
            sourceRecord: sourceRecord, build: build, commit: source.commit, actor: pusher)
        let formation = release.release.runnableTypes.map { "\($0)=\(release.release.formation[$0]!.quantity)" }.joined(separator: " ")
        say("-----> Released v\(release.version) (\(formation.isEmpty ? "no processes" : formation)); rolling out\n")
        let rolloutStarted = ContinuousClock.now
        if let command = ReleasePhase.command(of: release.release) {
            // The release phase runs on a node before any process of the release starts; its output comes here as it runs.
            let vars = try await ReleaseStore(keg: keg, refs: refs).configVars(release.release.config).vars
            let timeout = ReleasePhase.timeout(vars)
            say("-----> Running the release command: \(command.terminalSafe)\n")
            let phase = try await followReleasePhase(app: app, release: release.kid, timeout: .seconds(timeout + 90))
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
        switch try await RolloutWatch.wait(app: app, release: release.kid, keg: keg, refs: refs, timeout: .seconds(90)) {
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
        say("-----> Done in \(String(format: "%.1f", Self.seconds(ContinuousClock.now - started))) s: \(app) \(source.commit.prefix(7)) is image \(image)\n")
        return image
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// The build's inputs: the app's stack, and the buildpacks named in
    /// `.buildpacks`, else every registered one in detection order.
    func buildInputs(source: KID, app record: AppRecord) async throws -> BuildInputs {
        let stacks = StackStore(keg: keg, refs: refs)
        let stack = try await stacks.get(record.stack)
        let build = try await stacks.buildImage(of: record.stack)
        let buildImage = build.image == stack.image ? nil : build.image
        // Scoped to the app when it has a build cache or dependency layers of its own (see BuildInputs.cacheScope).
        // An empty cache (what a buildpack that caches nothing leaves) is no cache.
        let cacheTree = try await refs.get(try Schema.buildCache(record.name))
        var cached = false
        if let cacheTree, keg.contains(cacheTree.kid) { cached = !(try keg.tree(cacheTree.kid).entries.isEmpty) }
        let ownLayers = try await refs.list(prefix: try Schema.appDependencies(record.name))
        let hasCache = cached || !ownLayers.isEmpty
        let scope = hasCache ? record.name : nil
        try await checkRuntimes(source: source, app: record, stacks: stacks)
        let store = BuildpackStore(keg: keg, refs: refs)
        if let entry = try keg.tree(source).entries.first(where: { $0.nameString == ".buildpacks" }) {
            guard entry.type == .file, let kid = entry.kid else { throw KbuildError(.invalidArgument, ".buildpacks must be a regular file") }
            var chosen: [Buildpack] = []
            for choice in try BuildFiles.parseBuildpacksFile(String(decoding: try keg.logicalBytes(kid, maxWhole: 64 << 10), as: UTF8.self)) {
                let pack: Buildpack
                switch choice {
                case .named(let name):
                    pack = try await store.get(name)
                case .git(let url, let ref):
                    pack = try await GitBuildpacks(keg: keg, refs: refs).resolve(
                        url: url, ref: ref, app: record.name, buildImage: build.image, network: record.buildNetwork.rawValue,
                        sandbox: sandbox, egress: EgressNetwork(dataDir: keg.dataDir.root.path, slot: EgressNetwork.oneOffSlot), actor: pusher
                    ) { [say] in say("-----> Buildpack \(url)\(ref.map { "#\($0)" } ?? ""): cloning it for this app (once)\n") }
                case .inTree(let path):
                    let tree = try BuildpackStore.subtree(source, path: path, keg: keg)
                    try BuildpackStore.check(tree: tree, keg: keg, what: "./\(path.joined(separator: "/")) (named in .buildpacks)")
                    pack = Buildpack(name: "app-" + path.joined(separator: "-").lowercased().filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }, tree: tree)
                }
                guard !chosen.contains(where: { $0.name == pack.name }) else {
                    throw KbuildError(.invalidArgument, ".buildpacks names \(pack.name) twice")
                }
                chosen.append(pack)
            }
            return BuildInputs(source: source, stackName: stack.name, stack: stack.image, buildpacks: chosen, detect: false,
                               network: record.buildNetwork.rawValue, buildImage: buildImage,
                               cacheEpoch: record.cacheEpoch == 0 ? nil : record.cacheEpoch, cacheScope: scope)
        }
        var all = try await store.list()
        if all.isEmpty {
            all = try await store.registerShipped(actor: pusher)
            all = try await store.list()
        }
        guard !all.isEmpty else {
            throw KbuildError(.notFound, "no buildpacks are registered: add one with `kbuild buildpack add DIR`")
        }
        return BuildInputs(source: source, stackName: stack.name, stack: stack.image, buildpacks: all, detect: true,
                           network: record.buildNetwork.rawValue, buildImage: buildImage,
                               cacheEpoch: record.cacheEpoch == 0 ? nil : record.cacheEpoch, cacheScope: scope)
    }

    /// Follows the release phase of `release` to its end: its output as the
    /// node writes it, then the rest from the Keg. Nil when it did not end in time
    /// (or no node agent is up to run it).
    func followReleasePhase(app: String, release: KID, timeout: Duration) async throws -> ReleasePhaseRecord? {
        let reader = ClusterReader(records: keg, refs: refs)
        let deadline = ContinuousClock.now + timeout
        var offset: UInt64 = 0
        var shown = false
        let now = Date()
        guard try await reader.nodes().contains(where: { $0.record.isAlive(reporting: $0.status, at: now, lease: 10) }) else { return nil }
        while ContinuousClock.now < deadline {
            let revision = try await refs.currentRevision()
            if let ref = try await refs.get(try Schema.releasePhase(app)) {
                let record = try await reader.record(ReleasePhaseRecord.self, ref.kid, what: "release phase")
                if record.release == release {
                    if !shown {
                        say("       on node \(record.node)\n")
                        shown = true
                    }
                    if let live = record.liveLog {
                        let (bytes, next) = BuildLog.read(live, from: offset)
                        offset = next
                        if !bytes.isEmpty { say(String(decoding: bytes, as: UTF8.self)) }
                    }
                    if record.state != .running {
                        if let output = record.output {
                            let stored = try keg.logicalBytes(output, maxWhole: 64 << 20)
                            if Int(offset) < stored.count { say(String(decoding: stored[Int(offset)...], as: UTF8.self)) }
                        }
                        return record
                    }
                }
            }
            try await reader.waitForChange(after: revision, timeout: .milliseconds(250))
        }
        return nil
    }

    /// Refuses a push whose version files ask for a runtime its stack lacks,
    /// before anything is built (see `RuntimeVersions`).
    func checkRuntimes(source: KID, app record: AppRecord, stacks: StackStore) async throws {
        var files: [String: String] = [:]
        for entry in try keg.tree(source).entries where [".python-version", "runtime.txt", "package.json", "go.mod"].contains(entry.nameString) {
            guard entry.type == .file, let kid = entry.kid else { continue }
            files[entry.nameString] = String(decoding: try keg.logicalBytes(kid, maxWhole: 1 << 20), as: UTF8.self)
        }
        let requests = try RuntimeVersions.requests(files: files)
        guard !requests.isEmpty else { return }
        var runtimes: [String: [String: String]] = [:]
        for stack in try await stacks.list() where !stack.name.hasSuffix(StackStore.buildSuffix) {
            let build = try await stacks.buildImage(of: stack.name)
            runtimes[stack.name] = StackStore.runtimes(of: try stacks.images.config(of: build.manifest).config)
        }
        // A stack that says nothing of its runtimes (imported, or made before they were recorded) is not checked.
        guard let own = runtimes[record.stack], !own.isEmpty else { return }
        try RuntimeVersions.check(requests, app: record.name, stack: record.stack, stacks: runtimes)
    }

    /// Waits for a worker to run the build, following its log (the copy on
    /// this machine: a worker here writes it, one on another machine sends it
    /// through the API). Builds run on workers only: while none holds the
    /// build the pusher is told it waits in the queue, and it runs when a
    /// worker joins; a worker that stops renewing its claim loses it to the next.
    func awaitBuild(_ build: KID, job: BuildJob, queue: BuildQueue) async throws -> BuildRecord {
        let resultRef = try Schema.buildResult(build)
        let baseline = try await refs.get(resultRef)?.version ?? 0
        try await queue.enqueue(job, actor: pusher)
        let waitingSince = ContinuousClock.now
        // Unclaimed, the push waits up to `queueWait`; once a worker holds it, up to the build's own limit.
        var deadline = waitingSince + queueWait
        var toldWaiting = false
        var toldExpired: String?
        var sawExpired = false
        var lastWord = ContinuousClock.now, lastLook = ContinuousClock.now
        // The log of the worker that holds the claim; a worker that takes the build over writes its own, and one
        // that starts it again under the same name starts its copy again (which is then shorter than what was read).
        var following: String?
        var attemptStarted = ContinuousClock.now
        var offset: UInt64 = 0
        func follow() {
            guard let following else { return }
            let path = queue.liveLogPath(build, worker: following)
            var st = stat()
            if offset > 0, stat(path, &st) == 0, UInt64(st.st_size) < offset {
                say("       (the build started again, on \(following))\n")
                offset = 0
                attemptStarted = ContinuousClock.now
            }
            let (bytes, next) = BuildLog.read(path, from: offset)
            offset = next
            if !bytes.isEmpty { say(String(decoding: bytes, as: UTF8.self)) }
        }
        while true {
            if let ref = try await refs.get(resultRef), ref.version > baseline {
                // The rest of the log, from the Keg (the live copy goes when the result is in).
                let record = try await Records.get(BuildRecord.self, ref.kid, from: keg, what: "build")
                if let following, following != record.worker { say("       (the build started again, on \(record.worker))\n") }
                if let log = record.log {
                    let stored = try keg.logicalBytes(log, maxWhole: 64 << 20)
                    let from = following == record.worker ? Int(min(offset, UInt64(stored.count))) : 0
                    if from < stored.count { say(String(decoding: stored[from...], as: UTF8.self)) }
                }
                return record
            }
            let claim = try await queue.claim(of: build)
            if let held = claim?.claim, !held.expired {
                if held.worker != following {
                    if following != nil { say("       (the build started again, on \(held.worker))\n") }
                    following = held.worker
                    offset = 0
                    attemptStarted = ContinuousClock.now
                }
                sawExpired = false
                // A worker that keeps renewing its claim is still at it (fetching inputs and sending what it made
                // count too), up to the build's own time limit and 10 minutes for the transfers.
                let attemptEnd = attemptStarted + .seconds(job.limits.timeout + 600)
                deadline = max(deadline, min(ContinuousClock.now + .seconds(3 * queue.lease + 60), attemptEnd))
            } else if let held = claim?.claim {
                if toldExpired != held.worker {
                    say("       (its worker \(held.worker) stopped renewing its claim: the next worker takes it over)\n")
                    toldExpired = held.worker
                    deadline = max(deadline, ContinuousClock.now + queueWait)
                }
                sawExpired = true
            } else if claim == nil, !toldWaiting, ContinuousClock.now - waitingSince > workerGrace {
                say("""
                    -----> No build worker has taken build \(build.short) (none is connected, or all are busy): it waits in the \
                    queue and runs when one is free (kbuild up runs one; on another machine, kbuild workers:join-token NAME prints the command)\n
                    """)
                toldWaiting = true
            }
            follow()
            // While no worker has it, a line every 10 s: the pusher sees the wait (and a pusher that is gone ends
            // this hook at the write). Each second: the server that runs git is still there (else the push is over).
            if following == nil || sawExpired, ContinuousClock.now - lastWord >= .seconds(10) {
                say("       (build \(build.short) waiting for a worker: \(Int((ContinuousClock.now - waitingSince).components.seconds)) s)\n")
                lastWord = ContinuousClock.now
            }
            if ContinuousClock.now - lastLook >= .seconds(1) {
                if pusherGone() {
                    // Nobody waits for it now: a build no worker has taken leaves the queue (one a worker runs is kept, memoised).
                    if try await queue.claim(of: build) == nil, let queued = try await refs.get(try Schema.buildQueued(build)) {
                        _ = try? await refs.compareAndSwap(queued.name, to: nil, expecting: .value(queued.kid), actor: pusher)
                    }
                    throw KbuildError(.io, "the pusher hung up; build \(build.short) was not deployed")
                }
                lastLook = ContinuousClock.now
            }
            guard ContinuousClock.now < deadline else {
                if following == nil || claim?.claim.expired ?? true {
                    throw KbuildError(.unsatisfiable, "no build worker took build \(build.short) in \(Int(queueWait.components.seconds)) s; it stays queued and is used when a worker has built it (push again then)")
                }
                throw KbuildError(.unsatisfiable, "build \(build.short) did not finish in time")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// An exclusive `flock` on a file in the app's repository, held while a push deploys.
struct PushLock {
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
