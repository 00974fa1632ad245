import Hummingbird
import Builds
import Releases
import Foundation
import KbuildCore
import KbuildServer
import KbuildState

/// Every build, queued, running and finished, as the dashboard's builds page
/// and `kbuild builds` list them, and cancelling one:
///
/// - `GET /api/v1/builds?page=N&per=M`: across apps (an app token: its apps only), newest first.
/// - `GET /api/v1/apps/APP/builds`: one app's; `…/builds/BUILD` one of them (a KID or prefix).
/// - `GET /api/v1/apps/APP/builds/BUILD/log[?follow=1]`: a build's log, for a token of its app.
/// - `POST /api/v1/apps/APP/builds/BUILD/cancel`: a queued build is taken off
///   the queue; a running one loses its claim, so its worker stops it within a
///   third of the lease. Either way its result says who cancelled it, and the
///   push waiting for it is refused.
extension APIRoutes {
    func registerBuilds(on router: Router<Context>, logs: BuildLogRoutes<Context>) {
        let p = API.prefix
        router.get("\(p)/builds") { r, _ in
            try await self.answer {
                let scope = self.scope(r).map(Set.init)
                return try await self.viewing(r).buildPage(r, apps: scope)
            }
        }
        router.get("\(p)/apps/:app/builds") { r, c in
            try await self.answer {
                let view = try await self.viewing(r, app: try self.app(c))
                return try await view.buildPage(r, apps: [try await view.existing(c)])
            }
        }
        router.get("\(p)/apps/:app/builds/:build/log") { r, c in
            do {
                let build = try await self.appBuild(r, c, logs: logs)
                return try await logs.response(build, follow: r.uri.queryParameters.get("follow") == "1")
            } catch {
                return ErrorBody.response(KbuildError.wrap(error))
            }
        }
        router.get("\(p)/apps/:app/builds/:build") { r, c in
            try await self.answer { () -> API.BuildInfo in
                let view = try await self.viewing(r, app: try self.app(c))
                let build = try await view.appBuild(r, c, logs: logs)
                guard let info = try await view.buildInfo(build) else { throw KbuildError(.notFound, "no build \(build.short)") }
                return info
            }
        }
        router.post("\(p)/apps/:app/builds/:build/cancel") { r, c in
            try await self.answer { try await self.cancel(try await self.appBuild(r, c, logs: logs), app: try self.app(c), actor: self.actor(r)) }
        }
    }

    /// The build named in the path (a KID or prefix) among the path's app's own builds: another app's
    /// builds are never matched, so the answer says nothing of them.
    func appBuild(_ r: Request, _ c: Context, logs: BuildLogRoutes<Context>) async throws -> KID {
        let app = try await existing(c)
        let prefix = try KIDPrefix(parsing: c.parameters.get("build") ?? "")
        var matches: Set<KID> = []
        for build in try await logs.builds(prefix, under: Schema.buildQueue) + (try await logs.builds(prefix, under: Schema.buildResults))
            where try await buildInfo(build)?.app == app {
            matches.insert(build)
        }
        // An app token: only the builds of the app as it is now.
        if r.headers[TokenAuthMiddleware<Context>.scopeHeader] != nil {
            let born = try await releases.created(app)
            for build in matches where (try await buildInfo(build)?.revision ?? .zero) < born { matches.remove(build) }
        }
        guard let build = matches.first else { throw KbuildError(.notFound, "\(app) has no build \(prefix)") }
        guard matches.count == 1 else { throw KbuildError(.ambiguous, "build prefix \(prefix) matches \(matches.count) of \(app)'s builds; give more digits") }
        return build
    }

    /// One page of builds of `apps` (nil: every app), newest change first.
    func buildPage(_ r: Request, apps: Set<String>?) async throws -> API.BuildPage {
        let q = r.uri.queryParameters
        let page = try Self.count(q.get("page"), "page", default: 1, max: 1_000_000)
        let per = try Self.count(q.get("per"), "per", default: 100, max: 1000)
        // Each build by its latest ref (queue, claim or result), newest first; only the page's records are read.
        var latest: [KID: Ref] = [:]
        for root in [Schema.buildQueue, try RefName("builds/claims"), Schema.buildResults] {
            for ref in try await refs.list(prefix: root) {
                let build: KID
                switch Schema.Key(ref.name) {
                case .buildQueued(let b), .buildClaim(let b), .buildResult(let b): build = b
                default: continue
                }
                if (latest[build]?.revision ?? .zero) < ref.revision { latest[build] = ref }
            }
        }
        // An app token sees its apps' builds since each was made (not an earlier app's of the same name).
        var born: [String: Revision] = [:]
        if r.headers[TokenAuthMiddleware<Context>.scopeHeader] != nil, let apps {
            // From the store as it is now (a past view would give an earlier app's making).
            let now = ReleaseStore(keg: keg, refs: (refs as? RefStoreAsOf)?.base ?? refs)
            for app in apps { born[app] = try await now.created(app) }
        }
        var infos: [API.BuildInfo] = []
        var total = 0
        let skip = (page - 1) * per
        for build in latest.keys.sorted(by: { latest[$0]!.revision > latest[$1]!.revision }) {
            // An app filter reads each build's app; without one only the page's builds are read.
            if apps == nil {
                total += 1
                guard total > skip, infos.count < per, let info = try await buildInfo(build) else { continue }
                infos.append(info)
            } else {
                guard let info = try await buildInfo(build), apps?.contains(info.app) ?? true, info.revision >= born[info.app] ?? .zero else { continue }
                total += 1
                if total > skip, infos.count < per { infos.append(info) }
            }
        }
        return API.BuildPage(builds: infos, total: total, page: page, perPage: per)
    }

    /// What is known of `build`: queued or running while it is on the queue, else its result.
    func buildInfo(_ build: KID) async throws -> API.BuildInfo? {
        if let queued = try await refs.get(try Schema.buildQueued(build)) {
            let job = try await reader.record(BuildJob.self, queued.kid, what: "build job")
            let claim = try? await BuildQueue(keg: keg, refs: refs).claim(of: build)
            let running = claim.map { !$0.claim.expired } ?? false
            var info = API.BuildInfo(build: build, app: job.app, state: running ? .running : .queued, inputs: job.inputs, revision: queued.revision)
            info.requestedBy = job.requestedBy
            info.requestedAt = job.requestedAt
            info.worker = running ? claim?.claim.worker : nil
            return info
        }
        guard let result = try await refs.get(try Schema.buildResult(build)) else { return nil }
        let record = try await reader.record(BuildRecord.self, result.kid, what: "build")
        var info = API.BuildInfo(build: build, app: record.app, state: record.status == .succeeded ? .succeeded : .failed,
                                 inputs: record.inputs, revision: result.revision)
        info.worker = record.worker
        info.startedAt = record.startedAt
        info.finishedAt = record.finishedAt
        info.error = record.error
        info.log = record.log
        return info
    }

    /// Cancels a queued or running build. The queue entry goes first, then the claim (its worker's next renewal
    /// fails and it stops the build), then the result is written over what was there: a build that finished in
    /// between keeps its own result, and the cancel says it came too late.
    func cancel(_ build: KID, app: String, actor: String) async throws -> API.BuildInfo {
        guard let info = try await buildInfo(build), info.state == .queued || info.state == .running else {
            throw KbuildError(.conflict, "build \(build.short) has finished: there is nothing to cancel")
        }
        let queueName = try Schema.buildQueued(build), resultName = try Schema.buildResult(build)
        guard let queued = try await refs.get(queueName) else { throw KbuildError(.conflict, "build \(build.short) has just finished") }
        let job = try await reader.record(BuildJob.self, queued.kid, what: "build job")
        let earlier = try await refs.get(resultName)
        // Off the queue first (no idle worker may claim it then), then the claim (its worker's renewal fails).
        _ = try? await refs.compareAndSwap(queueName, to: nil, expecting: .value(queued.kid), actor: actor)
        if let claim = try await refs.get(try Schema.buildClaim(build)) {
            _ = try? await refs.compareAndSwap(claim.name, to: nil, expecting: .value(claim.kid), actor: actor)
        }
        let now = Date()
        let record = BuildRecord(build: build, inputs: job.inputs, app: job.app, status: .failed, error: "cancelled by \(actor)",
                                 log: nil, layer: nil, used: [], processTypes: [:], configVars: [:], worker: info.worker ?? "-",
                                 startedAt: now, finishedAt: now)
        // A build retried with the same inputs has a result from before: that is what is expected there, not nothing.
        do {
            try await refs.compareAndSwap(resultName, to: try await Records.put(record, in: keg),
                                          expecting: earlier.map { .value($0.kid) } ?? .absent, actor: actor)
        } catch let error as KbuildError where error.code == .conflict {
            throw KbuildError(.conflict, "build \(build.short) finished before it could be cancelled")
        }
        return try await buildInfo(build) ?? info
    }

    static func count(_ text: String?, _ what: String, default value: Int, max: Int) throws -> Int {
        guard let text else { return value }
        guard let n = Int(text), n >= 1, n <= max else { throw KbuildError(.invalidArgument, "invalid \(what) \(text.debugQuoted): a number from 1 to \(max)") }
        return n
    }
}
