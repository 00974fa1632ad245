import Hummingbird
import KbuildCore
import KbuildServer
import KbuildState
import Builds
import Foundation
import NIOPosix

/// The live log of a build that a worker on another machine runs: `PUT
/// /api/v1/builds/BUILD/live-log?offset=N` appends to the control plane's
/// copy, at the path the pusher's hook follows (`BuildQueue.liveLogPath`),
/// so a push shows its build as it runs wherever the worker is. Only the
/// worker holding the build's live claim may write it (or the admin, into
/// that worker's copy); the copy is removed
/// when the build's result is in (the whole log is in the Keg then).
struct BuildLogRoutes<Context: RequestContext>: Sendable {
    let queue: BuildQueue
    let workers: WorkerClaims
    static var maxPiece: Int { 1 << 20 }
    static var maxFile: UInt64 { 64 << 20 }

    func register(on router: Router<Context>) {
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
}
