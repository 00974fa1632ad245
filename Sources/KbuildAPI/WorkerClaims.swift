import KbuildCore
import KbuildState
import Builds
import Foundation
import OCI
import NIOPosix

/// What a build worker holds now, read from the store: the checks behind
/// every write of a worker's token (`StateRoutes`, `BuildLogRoutes`), so a
/// worker acts only on the builds it claimed, while its claim is live.
struct WorkerClaims: Sendable {
    let refs: any RefStore
    let content: any RecordContent
    /// Whether this machine's Keg holds an object: what a worker's records name must be here first.
    let has: @Sendable (KID) -> Bool
    /// Where the live log of a build a worker runs is copied here (`BuildLogRoutes`).
    let liveLog: @Sendable (KID, String) -> String

    /// The build's result is in: its live copies go, those of attempts by
    /// workers that died included (the whole log is in the Keg, named by the result).
    func finished(_ build: KID, worker: String) async {
        let own = liveLog(build, worker)
        _ = try? await NIOThreadPool.singleton.runIfActive { Self.removeCopies(of: build, beside: own) }
    }

    static func removeCopies(of build: KID, beside own: String) {
        let dir = (own as NSString).deletingLastPathComponent
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix(build.hex + "-") {
            unlink(dir + "/" + name)
        }
    }
    /// The span a claim's lease must end in, from now (the queue's lease is 15 s, renewed every 5 s): a claim
    /// cannot be held forever, nor one that already looks run out here be written.
    static var minLease: Double { 5 }
    static var maxLease: Double { 25 }

    func claim(of build: KID) async throws -> BuildQueue.Claim? {
        guard let ref = try await refs.get(try Schema.buildClaim(build)) else { return nil }
        return try? await Records.get(BuildQueue.Claim.self, ref.kid, from: content, what: "build claim")
    }

    /// Whether `worker` holds a live claim on `build`.
    func holds(_ build: KID, worker: String) async throws -> Bool {
        guard let claim = try await claim(of: build) else { return false }
        return claim.worker == worker && !claim.expired
    }

    /// Whether `worker` holds a live claim on a build of `app` (any build when nil).
    func holdsBuild(of app: String?, worker: String) async throws -> Bool {
        for ref in try await refs.list(prefix: try RefName("builds/claims")) {
            guard case .buildClaim(let build) = Schema.Key(ref.name),
                  let claim = try? await Records.get(BuildQueue.Claim.self, ref.kid, from: content, what: "build claim"),
                  claim.worker == worker, !claim.expired else { continue }
            guard let app else { return true }
            if let queued = try await refs.get(try Schema.buildQueued(build)),
               let job = try? await Records.get(BuildJob.self, queued.kid, from: content, what: "build job"), job.app == app {
                return true
            }
        }
        return false
    }

    /// What a worker may point a ref at (and, for a claim, the only expectation
    /// its compare-and-swap may have: the claim the check read, so a takeover won
    /// by another worker between the check and the write is never overwritten): its own claim on a queued build (never
    /// over another worker's live one, ending within `minLease`…`maxLease`), the result
    /// of a build it holds naming itself, the queue entry of a build it holds
    /// (deleted only), the cache and dependency layers of an app whose build it holds.
    func checkWrite(_ name: RefName, to kid: KID?, worker: String) async throws -> RefExpectation? {
        func refuse(_ why: String) -> KbuildError {
            KbuildError(.forbidden, "build worker \(worker) may not set \(name) to \(kid?.short ?? "nothing"): \(why)")
        }
        func record<T: Decodable>(_ type: T.Type, _ what: String) async throws -> T {
            guard let kid else { throw refuse("it may not delete it") }
            do {
                return try await Records.get(type, kid, from: content, what: what)
            } catch {
                throw KbuildError(.invalidArgument, "build worker \(worker) may set \(name) only to a \(what) record it stored: \((error as? KbuildError)?.message ?? "\(error)")")
            }
        }
        func present(_ kids: [KID?]) throws {
            if let absent = kids.compactMap({ $0 }).first(where: { !has($0) }) {
                throw KbuildError(.conflict, "build worker \(worker) may not set \(name): object \(absent.short) it names is not here (publish it first)")
            }
        }
        switch Schema.Key(name) {
        case .buildClaim(let build):
            let current = try await refs.get(name)
            var held: BuildQueue.Claim?
            if let current { held = try? await Records.get(BuildQueue.Claim.self, current.kid, from: content, what: "build claim") }
            if kid == nil {
                // Its own claim, live or run out (finishing late is not a reason to leave it behind).
                guard let current, held?.worker == worker else { throw refuse("it does not hold the claim") }
                return .value(current.kid)
            }
            let claim = try await record(BuildQueue.Claim.self, "build claim")
            guard claim.worker == worker, claim.build == build else { throw refuse("the claim names another worker or build") }
            // The lease is judged by this machine's clock: a claim must end between `minLease` and `maxLease` from
            // now, so a worker whose clock is more than a few seconds off is refused, saying so.
            let now = Date().timeIntervalSince1970
            guard claim.expires >= now + Self.minLease else {
                throw refuse("its lease ends \(Int(claim.expires - now)) s from now by the control plane's clock, under \(Int(Self.minLease)) s (is the worker's clock behind?)")
            }
            guard claim.expires <= now + Self.maxLease else {
                throw refuse("a lease may end \(Int(Self.maxLease)) s from now at most by the control plane's clock (is the worker's clock ahead?)")
            }
            guard try await refs.get(try Schema.buildQueued(build)) != nil else { throw refuse("build \(build.short) is not queued") }
            if let held, held.worker != worker, !held.expired {
                throw KbuildError(.conflict, "build worker \(held.worker) holds build \(build.short)")
            }
            return current.map { .value($0.kid) } ?? .absent
        case .buildResult(let build):
            let result = try await record(BuildRecord.self, "build")
            guard result.build == build, result.worker == worker else { throw refuse("the record names another build or worker") }
            try present([result.log, try result.layer?.kid(), result.layer?.annotations?[treeAnnotation].flatMap { try? KID(parsing: $0) }])
            guard try await holds(build, worker: worker) else { throw refuse("it does not hold the claim on build \(build.short)") }
        case .buildQueued(let build):
            guard kid == nil else { throw refuse("builds are queued by pushes, not workers") }
            guard try await holds(build, worker: worker) else { throw refuse("it does not hold the claim on build \(build.short)") }
        case .appField(let app, .buildCache):
            guard try await holdsBuild(of: app, worker: worker) else { throw refuse("it holds no build of \(app)") }
            try present([kid])
        case .appDependency(let app, let key):
            let layer = try await record(DependencyLayers.Record.self, "dependency layer")
            guard layer.key.hex == key else { throw refuse("the layer is for key \(layer.key.short)") }
            guard try await holdsBuild(of: app, worker: worker) else { throw refuse("it holds no build of \(app)") }
            try present([layer.tree, try layer.layer.kid()])
        case .sharedDependency(let key):
            // Shared by every app: only a layer installed from an empty cache, only under its own key, and the first one
            // made stays (a worker cannot replace a layer other apps' builds already use).
            let layer = try await record(DependencyLayers.Record.self, "dependency layer")
            guard layer.key.hex == key, layer.clean else { throw refuse("a shared layer must be installed clean, under its own key") }
            guard try await holdsBuild(of: nil, worker: worker) else { throw refuse("it holds no build") }
            try present([layer.tree, try layer.layer.kid()])
            guard try await refs.get(name) == nil else { throw KbuildError(.conflict, "\(name) exists: the first shared layer made stays") }
            return .absent
        default:
            throw refuse("not a ref a build worker writes")
        }
        return nil
    }
}
