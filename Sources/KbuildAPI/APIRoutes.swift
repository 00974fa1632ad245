public import Hummingbird
public import Keg
public import KbuildState
import Builds
import Cluster
import Foundation
import GitGateway
import KbuildCore
import KbuildServer
import Releases
import Scheduler
public import Router
import Trace
public import Sandbox
import NodeAgent
import HTTPTypes

/// The HTTP JSON API under /api/v1: apps, config, releases, formation,
/// processes, logs, domains and nodes. Every route sits behind the server's
/// token check; handlers are thin, the work is in ReleaseStore and friends.
public struct APIRoutes<Context: RequestContext>: Sendable {
    let keg: Keg
    /// The state; a read with `?at=N` swaps in its past (`viewing`).
    var refs: any RefStore
    var reader: ClusterReader
    /// Where node agents on this machine keep their logs (`<state>/logs/ID.log`).
    let logDirs: @Sendable () -> [String]
    /// Where a node that joined over the network has its logs copied (nil: no node may send logs here).
    let nodeLogDir: (@Sendable (String) -> String)?
    /// What each node's join token reaches (one cache for the state and log routes).
    let reach: NodeReach
    /// The https URL and CA hash a joining node uses, once the TLS listener is up.
    let joinVia: @Sendable () -> (url: String, caHash: String)?
    /// Runs one-off processes (`kbuild run`); nil on a host that runs none.
    let sandbox: Sandbox?
    /// One-off runs' networks: each its own namespace with NAT egress only (nil: loopback only).
    public let egress: EgressNetwork?
    /// What one-off runs hold now, per app (for the app's limits).
    let oneOffs = OneOffLedger()
    /// The add-ons a backup, import, restore or upgrade is running on here: one at a time each.
    let addonsBusy = BusyNames()
    /// The kbuild executable the git hooks of new apps run.
    let kbuild: String
    /// Deploys what the git hooks hand over (`PushRoutes`): one pipeline, so one deploy per app at a time.
    let pipeline: DeployPipeline
    /// The request metrics of the router this process runs (nil: none runs here; the figures are empty).
    let routerMetrics: RouterMetrics?

    public init(keg: Keg, refs: any RefStore, sandbox: Sandbox?, egress: EgressNetwork? = nil, kbuild: String, replicas: (any KegUpstream)? = nil,
                nodeLogDir: (@Sendable (String) -> String)? = nil, joinVia: @escaping @Sendable () -> (url: String, caHash: String)? = { nil },
                routerMetrics: RouterMetrics? = nil, logDirs: @escaping @Sendable () -> [String]) {
        self.routerMetrics = routerMetrics
        self.nodeLogDir = nodeLogDir
        self.joinVia = joinVia
        self.reach = NodeReach(keg: keg, refs: refs)
        self.kbuild = kbuild
        self.keg = keg
        self.refs = refs
        self.sandbox = sandbox
        self.egress = egress
        self.reader = ClusterReader(records: keg, refs: refs)
        self.logDirs = logDirs
        // A git buildpack is cloned in this server's sandbox (one of its own where it runs no processes).
        let cloning: @Sendable () throws -> Sandbox = { try sandbox ?? Sandbox() }
        self.pipeline = DeployPipeline(keg: keg, refs: refs, sandbox: cloning, replicas: replicas)
    }

    var releases: ReleaseStore { ReleaseStore(keg: keg, refs: refs) }
    var apps: AppStore { AppStore(keg: keg, refs: refs) }

    public func register(on router: Router<Context>) {
        let p = API.prefix
        router.get("\(p)/apps") { r, _ in
            var count = 0
            var response = try await self.answer {
                let view = try await self.viewing(r)
                // An app token sees its own apps only.
                var scope = self.scope(r).map(Set.init)
                // Paged (`page`, `per`) and filtered by rollout state (`rollout=reverted,failed`) on request; the count in Kbuild-Total.
                let q = r.uri.queryParameters
                let page = try q.get("page").map { try Self.count($0, "page", default: 1, max: 1_000_000) }
                let per = try Self.count(q.get("per"), "per", default: 100, max: 1000)
                let rollouts = q.get("rollout").map { Set($0.split(separator: ",").map(String.init)) }
                if let past = view.refs as? RefStoreAsOf, let apps = scope {
                    // In the past, an app token's apps as they were made since: not an earlier app of the same name.
                    var made: Set<String> = []
                    for app in apps where try await self.releases.created(app) <= past.revision { made.insert(app) }
                    scope = made
                }
                let (apps, total) = try await view.listApps(scope: scope, rollouts: rollouts, page: page, per: per)
                count = total
                return apps
            }
            response.headers[HTTPField.Name(API.totalHeader)!] = String(count)
            return response
        }
        router.post("\(p)/apps") { r, c in
            try await self.answer {
                let record = try await self.apps.create(try await self.decode(API.CreateApp.self, r, c), kbuild: self.kbuild, actor: self.actor(r))
                // Where to push: this server as the client reached it.
                let host = r.head.authority ?? "localhost"
                return API.CreatedApp(app: record, gitURL: "http://\(host)/\(record.name).git")
            }
        }
        router.get("\(p)/ps") { r, _ in try await self.answer { try await self.viewing(r).tracer.runningProcesses() } }
        router.get("\(p)/apps/:app") { r, c in
            try await self.answer {
                let view = try await self.viewing(r, app: try self.app(c))
                return try await view.info(try await view.existing(c))
            }
        }
        router.delete("\(p)/apps/:app") { r, c in
            try await self.answer {
                let q = r.uri.queryParameters
                return try await self.destroy(try self.app(c), confirm: q.get("confirm"), volumes: q.get("volumes") == "1")
            }
        }
        router.get("\(p)/apps/:app/config") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                var vars = try await self.releases.config(app).vars
                // `keys=1`: the names only (what the dashboard lists; values come by `config/reveal`, recorded).
                if r.uri.queryParameters.get("keys") == "1" { vars = vars.mapValues { _ in "" } }
                return API.ConfigAnswer(vars: vars, release: try await self.releases.current(app)?.version)
            }
        }
        router.patch("\(p)/apps/:app/config") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let change = try await self.decode(API.ConfigChange.self, r, c)
                let entry = try await self.releases.setConfig(app: app, set: change.set, unset: change.unset, actor: self.actor(r))
                return API.ConfigAnswer(vars: try await self.releases.config(app).vars, release: entry?.version)
            }
        }
        // Config values shown on purpose (the dashboard's "show values"): the showing is recorded first.
        router.post("\(p)/apps/:app/config/reveal") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let config = try await self.releases.config(app)
                let record = ConfigAccessRecord(app: app, by: self.actor(r), keys: config.vars.keys.sorted())
                try await self.refs.set(try Schema.app(app, .configAccess), to: try await Records.put(record, in: self.keg), actor: self.actor(r))
                return API.ConfigAnswer(vars: config.vars, release: try await self.releases.current(app)?.version)
            }
        }
        // What one release changed from the one before it (the trace diff, for the app's own token too).
        router.get("\(p)/apps/:app/releases/:version/diff") { r, c in
            try await self.answer { () -> ReleaseDiff in
                let view = try await self.viewing(r, app: try self.app(c))
                let app = try await view.existing(c)
                let version = try self.version(c)
                guard version > 1 else { throw KbuildError(.notFound, "\(app) v1 is the first release: there is nothing before it to compare") }
                return try await view.tracer.diff(app: app, from: version - 1, to: version)
            }
        }
        router.get("\(p)/apps/:app/releases") { r, c in
            var count = 0
            var response = try await self.answer {
                let view = try await self.viewing(r, app: try self.app(c))
                let app = try await view.existing(c)
                // Paged on request (`page`, `per`); how many in all in Kbuild-Total.
                let q = r.uri.queryParameters
                let page = try q.get("page").map { try Self.count($0, "page", default: 1, max: 1_000_000) }
                let per = try Self.count(q.get("per"), "per", default: 50, max: 1000)
                count = try await view.releases.count(app)
                return try await view.releaseList(app, page: page, per: per)
            }
            response.headers[HTTPField.Name(API.totalHeader)!] = String(count)
            return response
        }
        router.get("\(p)/apps/:app/releases/:version") { r, c in
            try await self.answer {
                let view = try await self.viewing(r, app: try self.app(c))
                let app = try await view.existing(c)
                let entry = try await view.releases.get(app, version: try self.version(c))
                var info = API.ReleaseInfo(entry, status: try await view.statuses(app)[entry.version] ?? "")
                if let source = entry.release.sourceRecord, let record = try? await view.reader.record(SourceRecord.self, source, what: "source") {
                    info.message = record.message
                    info.author = "\(record.author) <\(record.authorEmail)>"
                }
                return info
            }
        }
        router.get("\(p)/apps/:app/releases/:version/output") { _, c in
            try await self.answer {
                let app = try await self.existing(c)
                return try await self.releaseOutput(app, version: try self.version(c))
            }
        }
        router.post("\(p)/apps/:app/releases/rollback") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let body = try await self.decode(API.Rollback.self, r, c)
                return API.ReleaseInfo(try await self.releases.rollback(app: app, to: body.version, actor: self.actor(r)), status: "current")
            }
        }
        router.get("\(p)/apps/:app/ps") { r, c in
            try await self.answer {
                let view = try await self.viewing(r, app: try self.app(c))
                return try await view.processes(try await view.existing(c))
            }
        }
        router.patch("\(p)/apps/:app/formation") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let body = try await self.decode(API.Scale.self, r, c)
                guard !body.changes.isEmpty else { throw KbuildError(.invalidArgument, "nothing to scale: give TYPE=COUNT, e.g. web=3") }
                let changes = try body.changes.map(FormationChange.init(parsing:))
                try await self.refuseWhileReleasePhase(app, what: "scale")
                let entry = try await self.releases.scale(app: app, changes: changes, actor: self.actor(r)) { formation in
                    try await AppLimits.get(app, keg: self.keg, refs: self.refs)
                        .check(use: APIRoutes.total(formation) + self.oneOffs.holding(app), app: app, what: "that formation")
                    try await self.checkFits(app: app, formation: formation, release: try await self.releases.current(app)?.release,
                                             only: Set(changes.map(\.type)))
                }
                return API.ReleaseInfo(entry, status: "current")
            }
        }
        router.post("\(p)/apps/:app/ps/restart") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                return try await self.restart(app, type: try await self.decode(API.Restart.self, r, c).type, actor: self.actor(r))
            }
        }
        router.get("\(p)/apps/:app/logs") { r, c in
            do {
                let app = try await self.existing(c)
                let q = r.uri.queryParameters
                let lines = Int(q.get("lines") ?? "") ?? 100
                let since = try q.get("since").map { text -> Date in
                    guard let seconds = Double(text), seconds >= 0 else { throw KbuildError(.invalidArgument, "invalid since \(text.debugQuoted): seconds") }
                    return Date().addingTimeInterval(-seconds)
                }
                let release = try q.get("release").map { text -> Int64 in
                    guard let v = Int64(text.hasPrefix("v") ? String(text.dropFirst()) : text), v > 0 else {
                        throw KbuildError(.invalidArgument, "invalid release \(text.debugQuoted): want vN")
                    }
                    return v
                }
                if q.get("follow") == "1" {
                    return try await self.followResponse(app, process: q.get("ps"), release: release, lines: max(0, min(lines, 100_000)))
                }
                let sources = try await self.logSources(app, process: q.get("ps"), release: release)
                guard let since else { return self.text(try self.tail(sources, lines: max(1, min(lines, 100_000)))) }
                // Everything since then: streamed, merged by time, in bounded memory.
                var headers = HTTPFields()
                headers[.contentType] = "text/plain; charset=utf-8"
                return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                    try await LogMerge(sources, since: since).run { chunk in try await writer.write(ByteBuffer(bytes: chunk)) }
                    try await writer.finish(nil)
                })
            } catch {
                return ErrorBody.response(KbuildError.wrap(error))
            }
        }
        router.get("\(p)/apps/:app/limits") { _, c in try await self.answer { try await self.limits(try await self.existing(c)) } }
        router.put("\(p)/apps/:app/limits") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let body = try await self.decode(API.Limits.self, r, c)
                if let m = body.memory, m < 16 << 20 { throw KbuildError(.invalidArgument, "invalid memory limit: at least 16M") }
                if let k = body.kegBytes, k < 1 << 20 { throw KbuildError(.invalidArgument, "invalid Keg limit: at least 1M") }
                if let c = body.cpus, !(c > 0 && c <= 1024) { throw KbuildError(.invalidArgument, "invalid CPU limit \(c): above 0, at most 1024") }
                if let b = body.builds, !(1...100).contains(b) { throw KbuildError(.invalidArgument, "invalid build limit \(b): 1 to 100") }
                if let v = body.volumeBytes, v < VolumeRecord.minimumSize {
                    throw KbuildError(.invalidArgument, "invalid volume limit: at least \(formatMemory(VolumeRecord.minimumSize))")
                }
                let record = AppLimits(kegBytes: body.kegBytes, memory: body.memory, cpus: body.cpus, builds: body.builds, volumeBytes: body.volumeBytes)
                try await self.refs.compareAndSwap(try Schema.limits(app), to: try Records.put(record, in: self.keg), expecting: .any, actor: self.actor(r))
                return try await self.limits(app)
            }
        }
        router.get("\(p)/apps/:app/domains") { r, c in
            try await self.answer {
                let view = try await self.viewing(r, app: try self.app(c))
                return try await view.domains(try await view.existing(c))
            }
        }
        router.post("\(p)/apps/:app/domains") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let domain = try await self.decode(API.Domain.self, r, c).domain.lowercased()
                try DomainsRecord.check(domain)
                guard !domain.hasSuffix(".localhost") else {
                    throw KbuildError(.invalidArgument, "invalid domain \(domain): APP.localhost names are the router's own")
                }
                if let owner = try await self.domainOwner(domain), owner != app {
                    throw KbuildError(.conflict, "domain \(domain) is already \(owner)'s")
                }
                return try await self.changeDomains(app, actor: self.actor(r)) { list in
                    if !list.contains(domain) { list.append(domain) }
                }
            }
        }
        router.delete("\(p)/apps/:app/domains/:domain") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let domain = (c.parameters.get("domain") ?? "").lowercased()
                return try await self.changeDomains(app, actor: self.actor(r)) { list in
                    guard let i = list.firstIndex(of: domain) else { throw KbuildError(.notFound, "\(app) has no domain \(domain)") }
                    list.remove(at: i)
                }
            }
        }
        registerVolumes(on: router)
        registerRouter(on: router)
        registerCertificates(on: router)
        registerAddons(on: router)
        registerRun(on: router)
        registerPushes(on: router)
        let queue = BuildQueue(keg: keg, refs: refs)
        let workers = WorkerClaims(refs: refs, content: keg, has: { [keg] in keg.contains($0) },
                                   liveLog: { queue.liveLogPath($0, worker: $1) })
        StateRoutes<Context>(refs: refs, content: keg, reach: reach, nodeLogDir: nodeLogDir, workers: workers).register(on: router)
        let buildLogs = BuildLogRoutes<Context>(queue: queue, workers: workers)
        buildLogs.register(on: router)
        registerBuilds(on: router, logs: buildLogs)
        registerEvents(on: router)
        registerTrace(on: router)
        registerAdmin(on: router)
        if let nodeLogDir { NodeLogRoutes<Context>(directory: nodeLogDir, reach: reach).register(on: router) }
        registerNodes(on: router)
    }

    // MARK: - Handlers

    /// Refuses a formation that cannot be placed beside what other apps run.
    /// The types that mount volumes (`release`: the one it would run with) must
    /// fit on their volumes' node.
    func checkFits(app: String, formation: [String: ProcessFormation], release: Release? = nil, only: Set<String>? = nil) async throws {
        let drained = try await reader.drainedNodes()
        let nodes = try await reader.nodes().filter { $0.record.isAlive(reporting: $0.status, at: Date()) && !drained.contains($0.record.name) }
        var candidates = nodes.map { n in
            let others = (n.assignment?.processes ?? []).filter { $0.spec.app != app }.reduce(Resources(memory: 0, cpus: 0)) { $0 + $1.spec.resources }
            return Placement.Candidate(node: n.record.name, free: n.record.capacity - others, siblings: 0)
        }
        let mounts = release?.mounts ?? []
        for (type, f) in formation.sorted(by: { $0.key < $1.key }) {
            let needs = Resources(memory: f.memory, cpus: f.cpus)
            let volume = mounts.first { $0.applies(to: type) }
            // A type not changing keeps what it has: its volume's node being away does not stop another type's change.
            if let only, !only.contains(type), volume != nil { continue }
            for i in 0..<f.quantity {
                let options = candidates.filter { volume == nil || $0.node == volume?.node }
                guard let node = Placement.choose(needs, among: options), let k = candidates.firstIndex(where: { $0.node == node }) else {
                    if let volume {
                        let why = options.isEmpty ? "node \(volume.node) is not reporting or is drained"
                            : "the node has \(options[0].free.description) free for it"
                        throw KbuildError(.unsatisfiable, "cannot run \(type)=\(f.quantity): \(type) mounts volume \(volume.volume), so every \(type) process runs on node \(volume.node), and \(type).\(i + 1) does not fit there (\(why)); nothing changed")
                    }
                    throw KbuildError(.unsatisfiable, "cannot run \(type)=\(f.quantity): \(type).\(i + 1) does not fit: \(Placement.whyNot(needs, among: candidates)); nothing changed")
                }
                candidates[k].free = candidates[k].free - needs
            }
        }
    }

    func restart(_ app: String, type: String?, actor: String) async throws -> [String: Int] {
        guard let current = try await releases.current(app) else { throw KbuildError(.notFound, "\(app) has no release to restart") }
        let types = type.map { [$0] } ?? current.release.runnableTypes
        for t in types where current.release.processTypes[t] == nil {
            throw KbuildError(.invalidArgument, "no process type \(t) in \(app) v\(current.version)")
        }
        let updated = try await refs.update(try Schema.restarts(app), as: RestartGenerations.self, in: keg, what: "restarts", actor: actor) { old in
            var gens = old?.generations ?? [:]
            for t in types { gens[t, default: 0] += 1 }
            return RestartGenerations(gens)
        }
        return updated.record?.generations ?? [:]
    }

    /// The app's log files (on this machine's nodes), each with its process name and short commit,
    /// filtered by process name and release.
    func logSources(_ app: String, process: String?, release: Int64?) async throws -> [LogMerge.Source] {
        // Process id → name, release and commit, from the app's process list.
        var who: [String: (name: String, version: Int64, commit: String)] = [:]
        for change in try await refs.history(try Schema.processes(app), limit: 10_000) {
            guard let kid = change.new, let r = try? await reader.record(ProcessRecord.self, kid, what: "process"), who[r.id] == nil else { continue }
            let commit = await (try? reader.record(Release.self, r.release, what: "release"))?.commit.map { String($0.prefix(7)) } ?? "-"
            who[r.id] = (r.name, r.version, commit)
        }
        var out: [LogMerge.Source] = []
        for dir in logDirs() {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix(app + ".") && name.hasSuffix(".log") {
                let id = String(name.dropLast(4))
                let info = who[id] ?? (String(id.dropFirst(app.count + 1).split(separator: "-").first ?? "?"), 0, "-")
                if let process, info.name != process { continue }
                if let release, info.version != release { continue }
                out.append(LogMerge.Source(path: dir + "/" + name, name: info.name, commit: info.commit))
            }
        }
        return out
    }

    /// The last `lines` lines of the app's logs: only the end of each file is read.
    func tail(_ sources: [LogMerge.Source], lines: Int) throws -> String { tailAndEnds(sources, lines: lines).text }

    /// The last `lines` whole lines, and where in each file they end (what a follow reads on from).
    func tailAndEnds(_ sources: [LogMerge.Source], lines: Int) -> (text: String, ends: [String: UInt64]) {
        var out: [(Date, String)] = []
        var ends: [String: UInt64] = [:]
        for source in sources {
            guard let handle = FileHandle(forReadingAtPath: source.path) else { continue }
            defer { try? handle.close() }
            let window = UInt64(min(max(lines, 1), 4096)) * 1024
            // A running process's helper may drop the head of its log meanwhile (the cap):
            // a read that comes back short found a file that shrank, so it is read again.
            var size: UInt64 = 0
            var start: UInt64 = 0
            var data = Data()
            for _ in 0..<3 {
                size = (try? handle.seekToEnd()) ?? 0
                start = size > window ? size - window : 0
                try? handle.seek(toOffset: start)
                data = (try? handle.readToEnd()) ?? Data()
                if UInt64(data.count) >= size - start { break }
            }
            // Whole lines only: a line still being written is the follow's.
            let whole = data.lastIndex(of: UInt8(ascii: "\n")).map { data.startIndex..<($0 + 1) } ?? data.startIndex..<data.startIndex
            ends[source.path] = start + UInt64(whole.count)
            guard lines > 0 else { continue }
            var parts = String(decoding: data[whole], as: UTF8.self).split(separator: "\n")
            if start > 0, !parts.isEmpty { parts.removeFirst() }  // a cut first line
            for line in parts.suffix(lines) {
                guard let l = LogLine.parse(line) else { continue }
                var formatted: [UInt8] = []
                source.format(line.utf8, into: &formatted)
                out.append((l.time, String(decoding: formatted, as: UTF8.self)))
            }
        }
        out.sort { $0.0 < $1.0 }
        return (out.suffix(lines).map(\.1).joined(), ends)
    }

    func domains(_ app: String) async throws -> [String] {
        guard let ref = try await refs.get(try Schema.domains(app)) else { return [] }
        return try await reader.record(DomainsRecord.self, ref.kid, what: "domains").domains
    }

    /// Which app serves `domain`, if any.
    func domainOwner(_ domain: String) async throws -> String? {
        for ref in try await refs.list(prefix: Schema.apps) {
            guard case .appField(let app, .domains) = Schema.Key(ref.name) else { continue }
            if try await reader.record(DomainsRecord.self, ref.kid, what: "domains").domains.contains(domain) { return app }
        }
        return nil
    }

    func changeDomains(_ app: String, actor: String, _ change: (inout [String]) throws -> Void) async throws -> [String] {
        let updated = try await refs.update(try Schema.domains(app), as: DomainsRecord.self, in: keg, what: "domains", actor: actor) { old in
            var list = old?.domains ?? []
            try change(&list)
            return DomainsRecord(list)
        }
        return (updated.record?.domains ?? []).sorted()
    }

    // MARK: - Plumbing

    /// These routes reading the state as it was right after revision `?at=N`
    /// (read-only, from the ref store's permanent history), or now.
    /// An app token sees `app` only as it has been since it was made: a revision before that shows an
    /// earlier app of the same name (destroyed, the name taken again), another tenant's.
    func viewing(_ r: Request, app: String? = nil) async throws -> APIRoutes {
        guard let at = r.uri.queryParameters.get("at") else { return self }
        var past = self
        let view = try await RefStoreAsOf.parse(at, of: refs)
        if let app, r.headers[TokenAuthMiddleware<Context>.scopeHeader] != nil, try await releases.created(app) > view.revision {
            throw KbuildError(.notFound, "no app named \(app.debugQuoted) at revision \(view.revision): it was made later")
        }
        past.refs = view
        past.reader = ClusterReader(records: keg, refs: past.refs)
        return past
    }

    /// When the state `viewing` shows was current: now, or the time of revision `?at=N`.
    func time(of r: Request) async throws -> Date {
        guard let view = refs as? RefStoreAsOf else { return Date() }
        return try await view.base.changes(prefix: nil, after: Revision(view.revision.value - 1), limit: 1).first?.time ?? Date()
    }

    func app(_ context: Context) throws -> String {
        let name = context.parameters.get("app") ?? ""
        try AppStore.checkName(name)
        return name
    }

    /// The app named in the path, which must exist.
    func existing(_ context: Context) async throws -> String {
        let name = try app(context)
        _ = try await apps.get(name)
        return name
    }

    /// Who asks. An app token acts as itself (`token:NAME`), whatever the
    /// client says; the admin token's holder vouches for the CLI's
    /// `Kbuild-Actor`, else the basic-auth user name, else "api".
    func actor(_ request: Request) -> String {
        if let token = request.headers[TokenAuthMiddleware<Context>.tokenNameHeader] { return "token:\(token)" }
        if let name = HTTPField.Name("Kbuild-Actor"), let actor = request.headers[name],
           !actor.isEmpty, actor.utf8.count <= 64, actor.allSatisfy({ $0.isLetter || $0.isNumber || "._@-:".contains($0) }) {
            return actor
        }
        return BasicAuth.user(request.headers[.authorization]) ?? "api"
    }

    func decode<T: Decodable>(_ type: T.Type, _ request: Request, _ context: Context) async throws -> T {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: API.maxBody)
        } catch {
            throw KbuildError(.tooLarge, "failed to read the request body: it is over \(API.maxBody >> 10) KiB")
        }
        do {
            return try JSONDecoder().decode(type, from: Data(buffer: body))
        } catch {
            throw KbuildError(.invalidArgument, "failed to read the request body: \(error)")
        }
    }

    func answer(_ work: () async throws -> some Encodable) async throws -> Response {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            encoder.dateEncodingStrategy = .iso8601
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: Array(try encoder.encode(try await work())))))
        } catch {
            return ErrorBody.response(KbuildError.wrap(error))
        }
    }

    func text(_ body: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
