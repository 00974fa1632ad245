import Hummingbird
import KbuildCore
import KbuildServer
import KbuildState
import Builds
import Foundation
import NIOPosix
import ServiceLifecycle

/// A build's log, kept by the control plane wherever the build runs:
///
/// - `PUT /api/v1/builds/BUILD/live-log?offset=N`: a worker on another
///   machine appends to the control plane's live copy (`BuildQueue.liveLogPath`,
///   where a worker here writes its own). Only the worker holding the build's
///   live claim may write it (or the admin, into that worker's copy); the copy
///   is removed when the build's result is in (the whole log is in the Keg then).
/// - `GET /api/v1/builds/BUILD/log` (admin only; BUILD a KID or a prefix): a
///   finished build's log; with `follow=1`, a queued or running build's log
///   from its start, pushed as it is written (`BuildLogFollower`, as a push
///   shows it), until the build ends.
struct BuildLogRoutes<Context: RequestContext>: Sendable {
    let queue: BuildQueue
    var refs: any RefStore { queue.refs }
    let workers: WorkerClaims
    static var maxPiece: Int { 1 << 20 }
    static var maxFile: UInt64 { 64 << 20 }

    func register(on router: Router<Context>) {
        router.get("\(API.prefix)/builds/:build/log") { r, c in
            do {
                let prefix = try KIDPrefix(parsing: c.parameters.get("build") ?? "")
                guard r.uri.queryParameters.get("follow") == "1" else {
                    return Self.plain(try await finishedLog(prefix))
                }
                return try await response(try await find(prefix), follow: true)
            } catch {
                return ErrorBody.response(KbuildError.wrap(error))
            }
        }
        router.put("\(API.prefix)/builds/:build/live-log") { r, c in
            do {
                let build = try KID(parsing: c.parameters.get("build") ?? "")
                let worker: String
                if let acting = r.headers[TokenAuthMiddleware<Context>.workerHeader] {
                    guard try await workers.holds(build, worker: acting) else {
                        throw KbuildError(.forbidden, "build worker \(acting) does not hold build \(build.short): it may not write its log")
                    }
                    worker = acting
                } else {
                    // The admin writes into the copy of whichever worker holds the build.
                    guard let claim = try await workers.claim(of: build), !claim.expired else {
                        throw KbuildError(.notFound, "build \(build.short) is not running: no worker holds it")
                    }
                    worker = claim.worker
                }
                let (offset, bytes) = try await LogCopy.piece(of: r, max: Self.maxPiece, what: "build \(build.short)'s log")
                let path = queue.liveLogPath(build, worker: worker)
                return try LogCopy.response(try await NIOThreadPool.singleton.runIfActive {
                    let dir = (path as NSString).deletingLastPathComponent
                    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                    return try LogCopy.write(path, offset: offset, bytes: bytes, max: Self.maxFile, what: "the log of build \(build.short)")
                })
            } catch {
                return ErrorBody.response(KbuildError.wrap(error))
            }
        }
    }

    /// `build`'s log: the stored one, or with `follow` the live one from its start until it ends.
    func response(_ build: KID, follow: Bool) async throws -> Response {
        guard follow else { return Self.plain(try await finishedLog(KIDPrefix(parsing: build.description))) }
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            try await self.follow(build) { try await writer.write(ByteBuffer(bytes: $0)) }
            try await writer.finish(nil)
        })
    }

    static func plain(_ bytes: [UInt8]) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// A finished build's log, by its KID or a prefix of it (at most 1 GiB).
    func finishedLog(_ prefix: KIDPrefix) async throws -> [UInt8] {
        let matches = try await builds(prefix, under: Schema.buildResults)
        guard let build = matches.first else {
            if let running = try await builds(prefix, under: Schema.buildQueue).first {
                throw KbuildError(.notFound, "build \(running.short) has not finished: kbuild logs \(running.short) --tail follows it")
            }
            throw KbuildError(.notFound, "no build \(prefix) has finished here (a build KID, as a push prints it: Build K-…)")
        }
        guard matches.count == 1 else { throw KbuildError(.ambiguous, "build prefix \(prefix) matches \(matches.count) builds; give more digits") }
        guard let record = try await queue.result(build) else { throw KbuildError(.notFound, "build \(build.short) has no result") }
        guard let log = record.log else { throw KbuildError(.notFound, "build \(record.build.short) has no log") }
        return try await NIOThreadPool.singleton.runIfActive { [keg = queue.keg] in try keg.logicalBytes(log, maxWhole: 1 << 30) }
    }

    /// The one build `prefix` names, queued, running or finished.
    func find(_ prefix: KIDPrefix) async throws -> KID {
        var matches = Set(try await builds(prefix, under: Schema.buildQueue))
        matches.formUnion(try await builds(prefix, under: Schema.buildResults))
        guard let build = matches.first else {
            throw KbuildError(.notFound, "no build \(prefix) is queued, running or finished here (a build KID, as a push prints it: Build K-…)")
        }
        guard matches.count == 1 else { throw KbuildError(.ambiguous, "build prefix \(prefix) matches \(matches.count) builds; give more digits") }
        return build
    }

    func builds(_ prefix: KIDPrefix, under root: RefName) async throws -> [KID] {
        try await refs.list(prefix: root).compactMap {
            switch Schema.Key($0.name) {
            case .buildQueued(let build) where build.hex.hasPrefix(prefix.hex): build
            case .buildResult(let build) where build.hex.hasPrefix(prefix.hex): build
            default: nil
            }
        }
    }

    /// Sends `build`'s log from its start until it ends: the live copy of the
    /// worker that holds it, then the rest from the Keg. It ends when the build
    /// is off the queue (done, or taken off with nobody waiting for it).
    func follow(_ build: KID, send: (_ bytes: [UInt8]) async throws -> Void) async throws {
        var log = BuildLogFollower(queue: queue, build: build)
        let started = ContinuousClock.now
        var lastWrite = ContinuousClock.now
        // Until the build ends, the client goes (a write throws: while no worker has the build, a line every
        // 10 s says so), the server stops, or an hour is over.
        while !Task.isCancelled && !Task.isShuttingDownGracefully && ContinuousClock.now - started < APIRoutes<Context>.followFor {
            // finish() writes the result before it takes the build off the queue: off the queue, the result is in.
            let queued = try await refs.get(try Schema.buildQueued(build)) != nil
            let claim = try await queue.claim(of: build)?.claim
            guard queued || !(claim?.expired ?? true) else {
                if let record = try await queue.result(build) {
                    let rest = try await log.last(of: record)
                    try await send(rest + Array("-----> Build \(build.short) \(record.status == .succeeded ? "succeeded" : "failed")\n".utf8))
                } else {
                    try await send(Array("-----> Build \(build.short) was taken off the queue before it ran\n".utf8))
                }
                return
            }
            let holder = claim.flatMap { $0.expired ? nil : $0.worker }
            let bytes = try await log.next(holder: holder)
            if !bytes.isEmpty {
                try await send(bytes)
                lastWrite = .now
            } else if holder == nil, ContinuousClock.now - lastWrite >= .seconds(10) {
                try await send(Array("       (build \(build.short) waiting for a worker: \((ContinuousClock.now - started).components.seconds) s)\n".utf8))
                lastWrite = .now
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        // Cut off, not ended: said, so the reader does not take it for the build's end.
        try await send(Array("       (stopped following build \(build.short) before it ended: kbuild logs \(build.short) --tail again)\n".utf8))
    }
}
