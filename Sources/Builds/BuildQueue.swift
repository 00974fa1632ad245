public import KbuildCore
public import Keg
public import KbuildState
public import Foundation
import NIOPosix

/// Builds waiting, claimed and done, as refs (one machine or many share them):
///
///     builds/queue/<build hex>    → the job (who asked, which app's cache, limits)
///     builds/claims/<build hex>   → the claim of the worker running it, with a lease
///     builds/results/<build hex>  → the build record; its history keeps every attempt
///
/// A worker claims a build by compare-and-swap, so no build runs twice at
/// once; it renews its lease while it runs, and a claim whose lease ran out
/// (the worker died) can be taken over by the next one.
public struct BuildQueue: Sendable {
    /// This machine's Keg (where a worker's live logs are written).
    public let keg: Keg
    /// Where jobs, claims and results are stored: the Keg here, or the control plane's API for a worker that joined.
    public let records: any RecordContent
    public let refs: any RefStore
    /// How long a claim holds without renewal.
    public let lease: TimeInterval

    public init(keg: Keg, records: (any RecordContent)? = nil, refs: any RefStore, lease: TimeInterval = 15) {
        self.keg = keg
        self.records = records ?? keg
        self.refs = refs
        self.lease = lease
    }

    public struct Claim: Codable, Sendable, Equatable {
        public var kind = "kbuild.build.claim/v1"
        public var build: KID
        public var worker: String
        /// Seconds since 1970 (records keep dates to the second; a lease needs finer).
        public var expires: Double
        public var expired: Bool { expires < Date().timeIntervalSince1970 }
    }


    /// The latest record of `build`, if it ever finished.
    public func result(_ build: KID) async throws -> BuildRecord? {
        guard let ref = try await refs.get(try Schema.buildResult(build)) else { return nil }
        return try await Records.get(BuildRecord.self, ref.kid, from: records, what: "build")
    }

    /// Queues `job` unless it is queued already; returns the build KID.
    @discardableResult
    public func enqueue(_ job: BuildJob, actor: String) async throws -> KID {
        let build = job.inputs.kid
        let kid = try await Records.put(job, in: records)
        do {
            try await refs.compareAndSwap(try Schema.buildQueued(build), to: kid, expecting: .absent, actor: actor)
        } catch let error as KbuildError where error.code == .conflict {
            // Someone queued the same build: it runs once, for both.
        }
        return build
    }

    /// Queued builds, oldest name first. A malformed entry (a name that is
    /// not a build KID, a record that is not a job) is reported and skipped:
    /// one bad ref must not stop every build.
    public func pending(report: (String) -> Void = { _ in }) async throws -> [(build: KID, job: BuildJob)] {
        var jobs: [(build: KID, job: BuildJob)] = []
        for ref in try await refs.list(prefix: Schema.buildQueue) {
            guard case .buildQueued(let build) = Schema.Key(ref.name) else {
                report("skipped \(ref.name.rawValue): its name is not a build KID")
                continue
            }
            do {
                jobs.append((build, try await Records.get(BuildJob.self, ref.kid, from: records, what: "build job")))
            } catch {
                report("skipped \(ref.name.rawValue): \(error)")
            }
        }
        return jobs
    }

    /// The current claim on `build`, if any.
    public func claim(of build: KID) async throws -> (claim: Claim, kid: KID)? {
        guard let ref = try await refs.get(try Schema.buildClaim(build)) else { return nil }
        return await (try Records.get(Claim.self, ref.kid, from: records, what: "build claim"), ref.kid)
    }

    /// Claims `build` for `worker`: nil when another worker holds a live claim.
    public func claim(_ build: KID, worker: String) async throws -> KID? {
        let name = try Schema.buildClaim(build)
        let expecting: RefExpectation
        if let (current, kid) = try await claim(of: build) {
            guard current.expired else { return nil }
            expecting = .value(kid)  // its worker stopped renewing: take it over
        } else {
            expecting = .absent
        }
        let kid = try await Records.put(Claim(build: build, worker: worker, expires: Date().timeIntervalSince1970 + lease), in: records)
        do {
            try await refs.compareAndSwap(name, to: kid, expecting: expecting, actor: worker)
            return kid
        } catch let error as KbuildError where error.code == .conflict {
            return nil
        }
    }

    /// Extends a claim; throws `.conflict` when it was lost.
    public func renew(_ build: KID, claim: KID, worker: String) async throws -> KID {
        let kid = try await Records.put(Claim(build: build, worker: worker, expires: Date().timeIntervalSince1970 + lease), in: records)
        try await refs.compareAndSwap(try Schema.buildClaim(build), to: kid, expecting: .value(claim), actor: worker)
        return kid
    }

    /// Records the result, takes the build off the queue, drops the claim.
    public func finish(_ build: KID, claim: KID, record: BuildRecord, worker: String) async throws {
        let kid = try await Records.put(record, in: records)
        try await refs.compareAndSwap(try Schema.buildResult(build), to: kid, expecting: .any, actor: worker)
        _ = try? await refs.compareAndSwap(try Schema.buildQueued(build), to: nil, expecting: .any, actor: worker)
        _ = try? await refs.compareAndSwap(try Schema.buildClaim(build), to: nil, expecting: .value(claim), actor: worker)
    }

    /// Where `worker` writes the log of `build` while it runs (one file per
    /// attempt: a worker that takes a build over starts a log of its own).
    public func liveLogPath(_ build: KID, worker: String) -> String {
        let name = String(worker.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-") ? $0 : "_" }.prefix(100))
        return keg.dataDir.root.path + "/builds/logs/\(build.hex)-\(name).log"
    }
}

/// How one attempt at a build ended, seen from the worker that claimed it.
enum Attempt: Sendable {
    case built(BuildRecord)
    /// The claim was taken over (renewal found another worker's claim).
    case lost
}

/// Claims queued builds and runs them, one at a time, until cancelled.
public struct BuildWorker: Sendable {
    public let queue: BuildQueue
    public let builder: Builder
    /// How often the queue is looked at when nothing changed.
    public let poll: Duration

    /// Where a build that could not run, a lost claim or a skipped record is reported.
    public let report: @Sendable (String) -> Void
    /// Where the log of a build goes while it runs, for a worker on another
    /// machine (the control plane keeps a copy the pusher follows); nil on the control plane's machine.
    public let liveLog: (any BuildLogSink)?

    public init(queue: BuildQueue, builder: Builder, poll: Duration = .milliseconds(200), liveLog: (any BuildLogSink)? = nil,
                report: @escaping @Sendable (String) -> Void = { _ in }) {
        self.queue = queue
        self.builder = builder
        self.poll = poll
        self.liveLog = liveLog
        self.report = report
    }

    /// Runs what is queued until cancelled. One build's failure to run (its
    /// claim lost, a record that cannot be read, a full disk) is reported and
    /// the worker goes on with the next; a bad entry is skipped, and reported
    /// once.
    public func run() async throws {
        var reported = Set<String>()
        while !Task.isCancelled {
            var ran = false
            let revision = try await queue.refs.currentRevision()
            let pending = try await queue.pending { message in
                if reported.insert(message).inserted { report("build worker: \(message)") }
            }
            for (build, job) in pending {
                do {
                    if try await runIfClaimable(build, job: job) { ran = true }
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    let message = "build \(build.short): \(error)"
                    if reported.insert(message).inserted { report("build worker: \(message)") }
                }
            }
            if !ran { try await waitForWork(after: revision) }
        }
    }

    /// Sleeps until a build is queued, or `poll` passes (a claim that ran out
    /// changes nothing under the queue, so it is looked at again then).
    func waitForWork(after revision: Revision) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [poll] in try await Task.sleep(for: poll) }
            group.addTask { [queue] in
                for try await _ in queue.refs.watch(prefix: Schema.buildQueue, after: revision) { return }
            }
            defer { group.cancelAll() }
            _ = try await group.next()
        }
    }

    /// Claims and runs `build`: false when another worker has it.
    @discardableResult
    public func runIfClaimable(_ build: KID, job: BuildJob) async throws -> Bool {
        guard var claim = try await queue.claim(build, worker: builder.worker) else { return false }
        let logs = queue.keg.dataDir.root.path + "/builds/logs"
        for dir in [queue.keg.dataDir.root.path + "/builds", logs] where mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw KbuildError.syscall("mkdir", dir, verb: "write the log of build \(build.short)")
        }
        let path = queue.liveLogPath(build, worker: builder.worker)
        // Earlier attempts' live logs (a worker that died left its own): this attempt is the one followed now.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: logs)) ?? [] where name.hasPrefix(build.hex + "-") {
            unlink(logs + "/" + name)
        }
        let log = try BuildLog(path: path)
        // The build and the lease renewal run side by side; losing the lease
        // cancels the build (whoever took the claim over runs it), and only it.
        let outcome = try await withThrowingTaskGroup(of: Attempt.self) { group in
            let current = claim
            group.addTask { .built(try await builder.run(job, log: log)) }
            if let liveLog {
                group.addTask { [report] in
                    await BuildWorker.ship(path, of: build, to: liveLog, report: report)
                    throw CancellationError()
                }
            }
            group.addTask { [queue, builder, report] in
                var held = current
                // A renewal that fails for another reason (the control plane away a moment) is tried again
                // until the lease would have run out; a refused or conflicting one means the claim is lost.
                // `renewed`: when the lease now held was asked for (it ends a lease after that).
                var renewed = ContinuousClock.now
                while true {
                    try await Task.sleep(for: .seconds(queue.lease / 6))
                    guard ContinuousClock.now - renewed >= .seconds(queue.lease / 3) else { continue }
                    let asked = ContinuousClock.now
                    // A renewal that hangs is given up when the lease it would extend has run out.
                    let left = .seconds(queue.lease) - (asked - renewed) - .seconds(1)
                    do {
                        let last = held
                        guard let next = try await BuildWorker.within(left, { try await queue.renew(build, claim: last, worker: builder.worker) }) else {
                            return .lost
                        }
                        held = next
                        renewed = asked
                    } catch let error as KbuildError where error.code == .conflict || error.code == .forbidden {
                        return .lost
                    } catch {
                        if Task.isCancelled { throw CancellationError() }
                        if ContinuousClock.now - renewed >= .seconds(queue.lease) { return .lost }
                        report("build worker: failed to renew the claim on build \(build.short) (trying again): \(error)")
                    }
                }
            }
            defer { group.cancelAll() }
            guard let first = try await group.next() else { throw CancellationError() }
            return first
        }
        guard case .built(let record) = outcome else {
            log.step("Build \(build.short) stopped here: its claim was taken over (this worker's lease ran out)")
            report("build worker: lost the claim on build \(build.short); cancelled it here")
            return false
        }
        if let latest = try await queue.claim(of: build), latest.claim.worker == builder.worker { claim = latest.kid }
        try await queue.finish(build, claim: claim, record: record, worker: builder.worker)
        unlink(path)  // the log is in the Keg now, named by the record
        return true
    }

    /// `work`'s result, or nil when `limit` passes first (`work` is cancelled then).
    static func within<T: Sendable>(_ limit: Duration, _ work: @escaping @Sendable () async throws -> T) async throws -> T? {
        guard limit > .zero else { return nil }
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await work() }
            group.addTask {
                try await Task.sleep(for: limit)
                return nil
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
    }

    /// Sends the log's new bytes to `sink` every 250 ms until cancelled (1 MiB
    /// a call at most). The control plane's copy is only for following: when it
    /// cannot be reached the build goes on, and the whole log is in its record.
    static func ship(_ path: String, of build: KID, to sink: any BuildLogSink, report: @Sendable (String) -> Void) async {
        var offset: UInt64 = 0
        var failing = false
        while !Task.isCancelled {
            do {
                while true {
                    let from = offset
                    // A read of the log file is blocking I/O: on the blocking-I/O pool.
                    let bytes = try await NIOThreadPool.singleton.runIfActive { () -> [UInt8] in
                        guard let handle = FileHandle(forReadingAtPath: path) else { return [] }
                        defer { try? handle.close() }
                        try handle.seek(toOffset: from)
                        return [UInt8](handle.readData(ofLength: 1 << 20))
                    }
                    guard !bytes.isEmpty else { break }
                    switch try await sink.appendBuildLog(build: build, offset: offset, bytes: bytes) {
                    case .stored(let size): offset = size
                    case .mismatch(let size): offset = size
                    }
                }
                failing = false
            } catch is CancellationError {
                return
            } catch {
                if !failing { report("build worker: failed to send the live log of build \(build.short) (it goes whole with the result): \(error)") }
                failing = true
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }
}
