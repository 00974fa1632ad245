import Cluster
import Foundation
import GitGateway
import KbuildCore
import KbuildServer
import KbuildState
import Releases

/// The apps' handlers: the list, one app's page, destroy, its releases'
/// statuses and its processes.
extension APIRoutes {
    /// Every app as `info` shows it but without its processes (`GET /apps/APP`
    /// and `GET /ps` have them), from one listing of `apps/` (not a dozen reads
    /// per app: 200 apps answer in milliseconds). The release's status is its
    /// latest rollout's verdict.
    /// The apps by name, each with its release, rollout and domains: those `scope` names (nil: all), those whose rollout
    /// is in `rollouts` (nil: any), and of those one page (`page` from 1, `per` to a page; nil: all). `total`: how many matched.
    func listApps(scope: Set<String>? = nil, rollouts: Set<String>? = nil, page: Int? = nil, per: Int = 100) async throws
        -> (apps: [API.AppInfo], total: Int) {
        var records: [String: KID] = [:]
        var fields: [String: [Schema.AppField: Ref]] = [:]
        for ref in try await refs.list(prefix: Schema.apps) {
            switch Schema.Key(ref.name) {
            case .app(let app): records[app] = ref.kid
            case .appField(let app, let field): fields[app, default: [:]][field] = ref
            default: continue
            }
        }
        var names = records.keys.sorted().filter { scope?.contains($0) ?? true }
        if let rollouts {
            var matching: [String] = []
            for app in names {
                let rollout = try await reader.record(RolloutRecord.self, ifAny: fields[app]?[.rollout]?.kid, what: "rollout")
                if let state = rollout?.state.rawValue, rollouts.contains(state) { matching.append(app) }
            }
            names = matching
        }
        let total = names.count
        if let page { names = Array(names.dropFirst((page - 1) * per).prefix(per)) }
        var list: [API.AppInfo] = []
        for app in names {
            let record = try await reader.record(AppRecord.self, records[app]!, what: "app"), named = fields[app] ?? [:]
            let rollout = try await reader.record(RolloutRecord.self, ifAny: named[.rollout]?.kid, what: "rollout")
            var release: API.ReleaseInfo?
            if let ref = named[.release] {
                let r = try await reader.record(Release.self, ref.kid, what: "release")
                let status = rollout.flatMap { $0.release == ref.kid ? Self.status(of: $0) : nil } ?? "current"
                release = API.ReleaseInfo(ReleaseEntry(kid: ref.kid, release: r, time: r.createdAt, actor: r.createdBy), status: status)
            }
            let domains = try await reader.record(DomainsRecord.self, ifAny: named[.domains]?.kid, what: "domains")?.domains ?? []
            list.append(API.AppInfo(name: app, stack: record.stack, deployBranch: record.deployBranch, createdBy: record.createdBy, createdAt: record.createdAt,
                                    release: release, rollout: rollout, domains: domains, processes: [],
                                    buildNetwork: record.buildNetwork.rawValue))
        }
        return (list, total)
    }

    func info(_ app: String) async throws -> API.AppInfo {
        let record = try await apps.get(app)
        let statuses = try await self.statuses(app)
        let current = try await releases.current(app)
        let rollout = try await reader.record(RolloutRecord.self, ifAny: try await refs.get(try Schema.rollout(app))?.kid, what: "rollout")
        return API.AppInfo(name: app, stack: record.stack, deployBranch: record.deployBranch, createdBy: record.createdBy, createdAt: record.createdAt,
                           release: current.map { API.ReleaseInfo($0, status: statuses[$0.version] ?? "current") },
                           rollout: rollout, domains: try await domains(app), processes: try await processes(app),
                           buildNetwork: record.buildNetwork.rawValue)
    }

    /// `addon`: the add-on's own app, destroyed by `addons:destroy` (no other way).
    func destroy(_ app: String, confirm: String?, volumes destroyVolumes: Bool, addon: Bool = false) async throws -> [String: String] {
        _ = try await apps.get(app)
        guard confirm == app else {
            throw KbuildError(.invalidArgument, "refusing to destroy \(app) without confirmation: pass confirm=\(app)")
        }
        // Add-ons: an add-on's app goes with its add-on only; an owner's add-ons go first (their data is not a side effect).
        let addons = try await addonRecords()
        if !addon, let own = addons.first(where: { $0.name == app }) {
            throw KbuildError(.conflict, "\(app) runs add-on \(own.name) of \(own.owner): destroy it with kbuild addons:destroy \(own.name) --app \(own.owner); nothing was deleted")
        }
        let owned = addons.filter { $0.owner == app && $0.name != app }
        if !owned.isEmpty {
            throw KbuildError(.conflict, "\(app) has add-ons (\(owned.map(\.name).joined(separator: ", "))): destroy them first with kbuild addons:destroy NAME --app \(app) --force; nothing was deleted")
        }
        // Volumes hold data: they go only when asked, and then after the processes that use them (their node deletes them).
        let volumes = try await volumeRecords(app).filter { $0.state == .active }
        if !volumes.isEmpty && !destroyVolumes {
            let names = volumes.map(\.name).joined(separator: ", ")
            throw KbuildError(.conflict, "\(app) has volumes (\(names)): destroy them with it (--volumes), or one by one with volumes:destroy; nothing was deleted")
        }
        for v in volumes { try await markDestroying(app, v.name, actor: "apps:destroy") }
        // Attached to another's add-on: no more (a new app of this name is not attached to anything).
        for a in addons where a.attachments.contains(where: { $0.app == app }) {
            _ = try await refs.update(try Schema.addon(a.name), as: AddonRecord.self, in: keg, what: "add-on", actor: "apps:destroy") { old in
                guard var r = old else { return old }
                r.attachments.removeAll { $0.app == app }
                return r
            }
        }
        // The release goes first, so the scheduler stops the processes; then everything else of the app.
        let all = try await refs.list(prefix: try Schema.app(app))
        let releaseFirst = all.filter { Schema.Key($0.name) == .appField(app, .release) } + all.filter { Schema.Key($0.name) != .appField(app, .release) }
        for ref in releaseFirst {
            _ = try? await refs.compareAndSwap(ref.name, to: nil, expecting: .value(ref.kid), actor: "apps:destroy")
        }
        try? FileManager.default.removeItem(atPath: apps.repository(app))
        // Its registry tags and its processes' logs go too: a new app of the same name starts with nothing of this one's.
        for ref in try await refs.list(prefix: Schema.registry) {
            guard case .registryTag(let repository, _) = Schema.Key(ref.name), repository == app || repository.hasPrefix(app + "/") else { continue }
            _ = try? await refs.compareAndSwap(ref.name, to: nil, expecting: .value(ref.kid), actor: "apps:destroy")
        }
        for dir in logDirs() {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix(app + ".") && name.hasSuffix(".log") {
                unlink(dir + "/" + name)
            }
        }
        try await AppTokens(keg: keg, refs: refs).forget(app: app, actor: "apps:destroy")
        return ["destroyed": app]
    }

    /// The app's releases, newest first: all, or one page (`page` from 1).
    func releaseList(_ app: String, page: Int? = nil, per: Int = 50) async throws -> [API.ReleaseInfo] {
        let statuses = try await self.statuses(app)
        let skip = page.map { ($0 - 1) * per } ?? 0
        return try await releases.list(app, skip: skip, limit: page == nil ? nil : per).enumerated().map { i, entry in
            API.ReleaseInfo(entry, status: statuses[entry.version] ?? (i + skip == 0 ? "current" : ""))
        }
    }

    /// Release version → what its rollout came to, from the rollout ref's history.
    func statuses(_ app: String) async throws -> [Int64: String] {
        var out: [Int64: String] = [:]
        for change in try await refs.history(try Schema.rollout(app), limit: 200).reversed() {
            guard let kid = change.new, let r = try? await reader.record(RolloutRecord.self, kid, what: "rollout") else { continue }
            out[r.version] = Self.status(of: r)
        }
        return out
    }

    /// What a rollout's verdict says of its release.
    static func status(of r: RolloutRecord) -> String {
        switch r.state {
        case .converged: "healthy"
        case .reverted: "reverted by v\(r.revertedBy ?? 0): \(r.reason ?? "")"
        case .failed: "failed: \(r.reason ?? "")"
        case .unschedulable: "unschedulable: \(r.reason ?? "")"
        }
    }

    /// The app's processes on every node, each with its release.
    func processes(_ app: String) async throws -> [API.ProcessInfo] {
        var out: [API.ProcessInfo] = []
        for node in try await reader.nodes() {
            let versions = Dictionary((node.assignment?.processes ?? []).map { ($0.id, $0.version) }, uniquingKeysWith: { a, _ in a })
            for status in node.status?.processes ?? [] where status.app == app {
                // A process no longer assigned (being stopped) names its release in its own record.
                var version = versions[status.id]
                if version == nil { version = try? await reader.record(ProcessRecord.self, ifAny: status.process, what: "process")?.version }
                out.append(API.ProcessInfo(node: node.record.name, status: status, release: version))
            }
        }
        return out.sorted { ($0.type, $0.name, $0.id) < ($1.type, $1.name, $1.id) }
    }
}
