import KbuildCore
import Keg
import KbuildState
import Builds
import Releases
import Cluster
import OCI
import Stacks
import Sandbox
import Foundation
import NIOPosix
import Synchronization

/// The steps of the deploy pipeline that take more than a few lines: the
/// build's inputs, waiting for a worker to build, and following the release phase.
extension DeployPipeline {
    /// The build's inputs: the app's stack, and the buildpacks named in
    /// `.buildpacks`, else every registered one in detection order.
    func buildInputs(source: KID, app record: AppRecord, pusher: String, say: @escaping @Sendable (String) -> Void) async throws -> BuildInputs {
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
                    ) { say("-----> Buildpack \(url)\(ref.map { "#\($0)" } ?? ""): cloning it for this app (once)\n") }
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

    /// Waits for a worker to run the build, following its log (`BuildLogFollower`).
    /// Builds run on workers only: while none holds the build the pusher is told
    /// it waits in the queue, and it runs when a worker joins; a worker that stops
    /// renewing its claim loses it to the next.
    func awaitBuild(_ job: BuildJob, queue: BuildQueue, pusher: String, say: @Sendable (String) -> Void,
                    abandoned: @Sendable () -> String?) async throws -> BuildRecord {
        let build = job.inputs.kid
        let resultRef = try Schema.buildResult(build)
        let baseline = try await refs.get(resultRef)?.version ?? 0
        // Pushes of apps with no cache share a build: the last one waiting may take it off the queue.
        BuildWaiters.shared.add(build)
        var waiting = true
        defer { if waiting { _ = BuildWaiters.shared.leave(build) } }
        try await queue.enqueue(job, actor: pusher)
        let waitingSince = ContinuousClock.now
        // Unclaimed, the push waits up to `queueWait`; once a worker holds it, up to the build's own limit.
        var deadline = waitingSince + queueWait
        var toldWaiting = false
        var toldExpired: String?
        var sawExpired = false
        var lastWord = ContinuousClock.now, lastLook = ContinuousClock.now
        var log = BuildLogFollower(queue: queue, build: build)
        // The log goes out as it comes, but never with a character cut in two (its first bytes wait for the rest).
        var partial: [UInt8] = []
        func tell(_ bytes: [UInt8], last: Bool = false) {
            partial += bytes
            let cut = last ? partial.endIndex : UTF8Cut.whole(partial)
            guard cut > 0 else { return }
            say(String(decoding: partial[..<cut], as: UTF8.self))
            partial.removeFirst(cut)
        }
        while true {
            if let ref = try await refs.get(resultRef), ref.version > baseline {
                let record = try await Records.get(BuildRecord.self, ref.kid, from: keg, what: "build")
                tell(try await log.last(of: record), last: true)
                return record
            }
            let claim = try await queue.claim(of: build)
            if let held = claim?.claim, !held.expired {
                tell(try await log.next(holder: held.worker))
                sawExpired = false
                // A worker that keeps renewing its claim is still at it (fetching inputs and sending what it made
                // count too), up to the build's own time limit and 10 minutes for the transfers.
                let attemptEnd = log.attemptStarted + .seconds(job.limits.timeout + 600)
                deadline = max(deadline, min(ContinuousClock.now + .seconds(3 * queue.lease + 60), attemptEnd))
            } else {
                tell(try await log.next(holder: nil))
                if let held = claim?.claim {
                    if toldExpired != held.worker {
                        say("       (its worker \(held.worker) stopped renewing its claim: the next worker takes it over)\n")
                        toldExpired = held.worker
                        deadline = max(deadline, ContinuousClock.now + queueWait)
                    }
                    sawExpired = true
                } else if !toldWaiting, ContinuousClock.now - waitingSince > workerGrace {
                    say("""
                        -----> No build worker has taken build \(build.short) (none is connected, or all are busy): it waits in the \
                        queue and runs when one is free (kbuild up runs one; on another machine, kbuild workers:join-token NAME prints the command)\n
                        """)
                    toldWaiting = true
                }
            }
            // While no worker has it, a line every 10 s: the pusher sees the wait.
            if log.worker == nil || sawExpired, ContinuousClock.now - lastWord >= .seconds(10) {
                say("       (build \(build.short) waiting for a worker: \(Int((ContinuousClock.now - waitingSince).components.seconds)) s)\n")
                lastWord = ContinuousClock.now
            }
            if ContinuousClock.now - lastLook >= .seconds(1) {
                if let why = abandoned() {
                    // Nobody waits for it now: a build no worker has taken leaves the queue (one a worker runs is kept,
                    // memoised), unless another push still waits for it.
                    waiting = false
                    if BuildWaiters.shared.leave(build), try await queue.claim(of: build) == nil,
                       let queued = try await refs.get(try Schema.buildQueued(build)) {
                        _ = try? await refs.compareAndSwap(queued.name, to: nil, expecting: .value(queued.kid), actor: pusher)
                    }
                    throw KbuildError(.io, "\(why); build \(build.short) was not deployed")
                }
                // Another push that gave up on the same build may have taken it off the queue meanwhile: queued again.
                if claim == nil, try await refs.get(try Schema.buildQueued(build)) == nil,
                   (try await refs.get(resultRef)?.version ?? 0) <= baseline {
                    try await queue.enqueue(job, actor: pusher)
                }
                lastLook = ContinuousClock.now
            }
            guard ContinuousClock.now < deadline else {
                if log.worker == nil || claim?.claim.expired ?? true {
                    throw KbuildError(.unsatisfiable, "no build worker took build \(build.short) in \(Int(queueWait.components.seconds)) s; it stays queued and is used when a worker has built it (push again then)")
                }
                throw KbuildError(.unsatisfiable, "build \(build.short) did not finish in time")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Follows the release phase of `release` to its end: its output as the
    /// node writes it, then the rest from the Keg. Nil when it did not end in time
    /// (or no node agent is up to run it).
    func followReleasePhase(app: String, release: KID, timeout: Duration, say: @Sendable (String) -> Void) async throws -> ReleasePhaseRecord? {
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
                        // 1 MiB a look, off the cooperative threads, never a character cut in two.
                        let (bytes, next) = try await NIOThreadPool.singleton.runIfActive { [offset] in BuildLog.read(live, from: offset, max: 1 << 20) }
                        let whole = UTF8Cut.whole(bytes)
                        offset = next - UInt64(bytes.count - whole)
                        if whole > 0 { say(String(decoding: bytes[..<whole], as: UTF8.self)) }
                    }
                    if record.state != .running {
                        if let output = record.output {
                            let stored = try await NIOThreadPool.singleton.runIfActive { [keg] in try keg.logicalBytes(output, maxWhole: 64 << 20) }
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
}

/// How many pushes in this process wait for each build.
final class BuildWaiters: Sendable {
    static let shared = BuildWaiters()
    private let waiting = Mutex<[KID: Int]>([:])

    func add(_ build: KID) { waiting.withLock { $0[build, default: 0] += 1 } }

    /// One push stops waiting; true when it was the last.
    func leave(_ build: KID) -> Bool {
        waiting.withLock {
            let left = ($0[build] ?? 1) - 1
            $0[build] = left > 0 ? left : nil
            return left <= 0
        }
    }
}

/// Where bytes may be cut without splitting a UTF-8 character.
enum UTF8Cut {
    /// The length of the longest prefix of `bytes` that ends on a whole character (what is left waits for more).
    static func whole(_ bytes: [UInt8]) -> Int {
        // Back over continuation bytes to the last lead byte: is its sequence complete?
        var i = bytes.count - 1
        var continuation = 0
        while i >= 0, continuation < 3, bytes[i] & 0xC0 == 0x80 {
            i -= 1
            continuation += 1
        }
        guard i >= 0 else { return bytes.count }
        let lead = bytes[i]
        let length = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
        return continuation + 1 >= length ? bytes.count : i
    }
}
