public import KbuildCore
public import Keg
public import KbuildState
import Foundation

/// Makes and reads releases. Every change is a compare-and-swap of
/// `apps/APP/release` from the release it was computed from, so two
/// concurrent changes never lose one another (the loser computes again).
/// `apps/APP/config` holds the config vars, set before the first deploy too.
public struct ReleaseStore: Sendable {
    public let keg: Keg
    public let refs: any RefStore

    public init(keg: Keg, refs: any RefStore) {
        self.keg = keg
        self.refs = refs
    }


    public func current(_ app: String) async throws -> ReleaseEntry? {
        guard let change = try await refs.history(Schema.release(app), limit: 1).first, let kid = change.new else { return nil }
        return ReleaseEntry(kid: kid, release: try await release(kid), time: change.time, actor: change.actor)
    }

    /// Newest first: `skip` of them left out, then at most `limit`. Only the app as it is now: the releases of
    /// an earlier app of the same name (destroyed, its name taken again) are another tenant's history.
    public func list(_ app: String, skip: Int = 0, limit: Int? = nil) async throws -> [ReleaseEntry] {
        var entries: [ReleaseEntry] = []
        let born = try await created(app)
        for change in try await refs.history(Schema.release(app), limit: limit.map { $0 + skip }).dropFirst(skip) where change.revision > born {
            guard let kid = change.new else { continue }
            entries.append(ReleaseEntry(kid: kid, release: try await release(kid), time: change.time, actor: change.actor))
        }
        return entries
    }

    /// How many releases the app has had (0 before the first).
    public func count(_ app: String) async throws -> Int {
        let born = try await created(app)
        let history = try await refs.history(Schema.release(app), limit: nil).filter { $0.revision > born }
        guard let newest = history.first else { return 0 }
        return Int(newest.version - Self.offset(history))
    }

    /// What the ref's version runs ahead of the releases' own: a ref counts on across an earlier app of the
    /// same name, while a new app's releases start again at v1.
    static func offset(_ history: [RefChange]) -> Int64 { (history.last?.version ?? 1) - 1 }

    /// The revision that made the app as it is now (zero when it has no record).
    public func created(_ app: String) async throws -> Revision {
        try await refs.history(Schema.app(app), limit: nil).first { $0.old == nil && $0.new != nil }?.revision ?? .zero
    }

    public func get(_ app: String, version: Int64) async throws -> ReleaseEntry {
        // The ref's history knows each change's version: only the one asked for is read.
        let born = try await created(app)
        let history = try await refs.history(Schema.release(app), limit: nil).filter { $0.revision > born }
        let offset = Self.offset(history)
        guard let change = history.first(where: { $0.version - offset == version && $0.new != nil }), let kid = change.new else {
            let newest = history.first.map { "v1 to v\($0.version - offset)" } ?? "none yet"
            throw KbuildError(.notFound, "no release v\(version) of \(app) (its releases: \(newest))")
        }
        return ReleaseEntry(kid: kid, release: try await release(kid), time: change.time, actor: change.actor)
    }

    public func release(_ kid: KID) async throws -> Release { try await Records.get(Release.self, kid, from: keg, what: "release") }

    public func config(_ app: String) async throws -> ConfigVars {
        guard let ref = try await refs.get(Schema.config(app)) else { return ConfigVars() }
        return try await Records.get(ConfigVars.self, ref.kid, from: keg, what: "config")
    }

    public func configVars(_ kid: KID) async throws -> ConfigVars { try await Records.get(ConfigVars.self, kid, from: keg, what: "config") }

    /// A pushed image becomes the next release, with the current config and
    /// formation; the first release runs one web process (when there is a web type).
    public func deploy(app: String, image: KID, processTypes: [String: String], healthchecks: [String: HealthCheck],
                       sourceRecord: KID, build: KID, commit: String, actor: String) async throws -> ReleaseEntry {
        try await change(app, actor: actor) { current in
            var formation = current?.release.formation ?? [:]
            if current == nil, processTypes["web"] != nil { formation["web"] = ProcessFormation(quantity: 1) }
            for type in processTypes.keys where formation[type] == nil && Release.isProcessType(type) { formation[type] = ProcessFormation(quantity: 0) }
            let config = try await configKID(app)
            var release = Release(app: app, version: (current?.version ?? 0) + 1, image: image, config: config, processTypes: processTypes,
                                  formation: formation, healthchecks: healthchecks, sourceRecord: sourceRecord, build: build,
                                  commit: commit, description: "Deploy \(commit.prefix(7))", createdBy: actor)
            release.runsReleasePhase = processTypes[Release.releasePhaseType] != nil ? true : nil
            // The app's volumes stay mounted (a type the new image no longer has simply runs nowhere), and its add-ons
            // reachable: a first deploy reaches those attached before it.
            release.mounts = current?.release.mounts
            release.reaches = if let current { current.release.reaches } else { try await attachedServices(app) }
            return release
        }
    }

    /// config:set / config:unset. With a release, it also makes the next one.
    @discardableResult
    public func setConfig(app: String, set: [String: String], unset: [String], actor: String) async throws -> ReleaseEntry? {
        try await refs.update(try Schema.config(app), as: ConfigVars.self, in: keg, what: "config", actor: actor) { old in
            try (old ?? ConfigVars()).applying(set: set, unset: unset)
        }
        guard try await current(app) != nil else { return nil }
        let what = [set.isEmpty ? nil : "Set \(set.keys.sorted().joined(separator: ", "))",
                    unset.isEmpty ? nil : "Unset \(unset.sorted().joined(separator: ", "))"]
            .compactMap { $0 }.joined(separator: "; ") + " config vars"
        return try await change(app, actor: actor) { current in
            guard var next = current?.release else { throw KbuildError(.notFound, "no release of \(app)") }
            next.version += 1
            next.config = try await configKID(app)
            next.relink(description: what, actor: actor)
            next.runsReleasePhase = next.processTypes[Release.releasePhaseType] != nil ? true : nil
            return next
        }
    }

    /// kbuild's own config vars of an app (an add-on's `KBUILD_ADDON_*`, which no user sets): changed, in a new release.
    @discardableResult
    public func setOwnConfig(app: String, set: [String: String], description: String, actor: String) async throws -> ReleaseEntry? {
        guard set.keys.allSatisfy(ConfigVars.isReserved) else { throw KbuildError(.invalidArgument, "not kbuild's own config vars: \(set.keys.sorted())") }
        try await refs.update(try Schema.config(app), as: ConfigVars.self, in: keg, what: "config", actor: actor) { old in
            var vars = (old ?? ConfigVars()).vars
            for (name, value) in set { vars[name] = value }
            return ConfigVars(vars)
        }
        guard try await current(app) != nil else { return nil }
        return try await change(app, actor: actor) { current in
            guard var next = current?.release else { throw KbuildError(.notFound, "no release of \(app)") }
            next.version += 1
            next.config = try await configKID(app)
            next.relink(description: description, actor: actor)
            next.runsReleasePhase = nil
            return next
        }
    }

    /// ps:scale: the next release with a changed formation. Refuses types the release cannot run.
    public func scale(app: String, changes: [FormationChange], actor: String, check: @Sendable ([String: ProcessFormation]) async throws -> Void = { _ in }) async throws -> ReleaseEntry {
        try await change(app, actor: actor) { current in
            guard let current else { throw KbuildError(.notFound, "\(app) has no release to scale yet: git push first") }
            for c in changes where !Release.isProcessType(c.type) {
                throw KbuildError(.invalidArgument, "release is \(app)'s release phase command (it runs once per release), not a process type to scale")
            }
            for c in changes where current.release.processTypes[c.type] == nil {
                let types = current.release.processTypes.keys.sorted().joined(separator: ", ")
                throw KbuildError(.invalidArgument, "no process type \(c.type) in \(app) v\(current.version) (its types: \(types.isEmpty ? "none" : types))")
            }
            let formation = FormationChange.apply(changes, to: current.release.formation)
            try await check(formation)
            var next = current.release
            next.version += 1
            next.formation = formation
            let what = changes.map { "\($0.type)=\($0.quantity)" }.joined(separator: " ")
            next.relink(description: "Scale \(what)", actor: actor)
            next.runsReleasePhase = nil
            return next
        }
    }

    /// releases:rollback: the image and config of `version` (default: the one
    /// before the current), with the current formation.
    /// The add-ons attached to `app`, or that it runs (from their records).
    func addons(of app: String) async throws -> [AddonRecord] {
        var out: [AddonRecord] = []
        for ref in try await refs.list(prefix: Schema.addons) {
            guard case .addon = Schema.Key(ref.name) else { continue }
            let addon = try await Records.get(AddonRecord.self, ref.kid, from: keg, what: "add-on")
            if addon.attachments.contains(where: { $0.app == app }) || addon.name == app { out.append(addon) }
        }
        return out
    }

    /// The service addresses of the add-ons attached to `app` (an add-on's app: its own).
    public func attachedServices(_ app: String) async throws -> [ServiceAddress]? {
        let out = Set(try await addons(of: app).map(\.service))
        return out.isEmpty ? nil : out.sorted { $0.address < $1.address }
    }

    /// `addons:attach` and `addons:detach`: the config var set or unset and the
    /// add-ons the app reaches changed, in one release (none before a first deploy,
    /// which reaches what is attached then).
    @discardableResult
    public func changeAttachments(app: String, set: [String: String], unset: [String], description: String, actor: String) async throws -> ReleaseEntry? {
        try await refs.update(try Schema.config(app), as: ConfigVars.self, in: keg, what: "config", actor: actor) { old in
            try (old ?? ConfigVars()).applying(set: set, unset: unset)
        }
        guard try await current(app) != nil else { return nil }
        return try await change(app, actor: actor) { current in
            guard var next = current?.release else { throw KbuildError(.notFound, "no release of \(app)") }
            next.version += 1
            next.config = try await configKID(app)
            next.reaches = try await attachedServices(app)
            next.relink(description: description, actor: actor)
            next.runsReleasePhase = next.processTypes[Release.releasePhaseType] != nil ? true : nil
            return next
        }
    }

    /// An app's first release, made by kbuild rather than a push (an add-on's).
    public func create(_ release: Release, actor: String) async throws -> ReleaseEntry {
        try await change(release.app, actor: actor) { current in
            guard current == nil else { throw KbuildError(.conflict, "\(release.app) has a release already") }
            var first = release
            first.version = 1
            first.relink(description: release.description, actor: actor)
            return first
        }
    }

    /// `volumes:mount` and `volumes:unmount`: the current release with its mounts changed
    /// (`change` gets them and returns what the release says, e.g. "Mount data at /data").
    public func changeMounts(app: String, actor: String, check: @Sendable (Release) async throws -> Void = { _ in },
                             _ change: @Sendable (inout [VolumeMount]) throws -> String) async throws -> ReleaseEntry {
        try await self.change(app, actor: actor) { current in
            guard let current else { throw KbuildError(.notFound, "\(app) has no release yet: git push first, then mount volumes") }
            var mounts = current.release.mounts ?? []
            let what = try change(&mounts)
            var next = current.release
            next.version += 1
            next.mounts = mounts.isEmpty ? nil : mounts.sorted { $0.path < $1.path }
            next.relink(description: what, actor: actor)
            next.runsReleasePhase = nil
            try await check(next)
            return next
        }
    }

    public func rollback(app: String, to version: Int64?, actor: String) async throws -> ReleaseEntry {
        try await change(app, actor: actor) { current in
            guard let current else { throw KbuildError(.notFound, "\(app) has no release to roll back") }
            let target = version ?? current.version - 1
            guard target >= 1, target != current.version else {
                throw KbuildError(.invalidArgument, target == current.version ? "v\(target) is the current release of \(app)" : "\(app) has no release before v\(current.version)")
            }
            let old = try await get(app, version: target).release
            var next = try await restoring(old, over: current, description: "Rollback to v\(target)", actor: actor)
            // The volumes mounted now stay (as the formation does): data is never rolled back with a release.
            // (A revert takes the healthy release's mounts: those ran.)
            next.mounts = current.release.mounts
            next.runsReleasePhase = next.processTypes[Release.releasePhaseType] != nil ? true : nil
            return next
        }
    }

    /// The scheduler's revert: back to `good` if `failed` is still current.
    public func revert(app: String, failed: KID, to good: KID, reason: String, actor: String) async throws -> ReleaseEntry? {
        do {
            return try await change(app, actor: actor) { current in
                guard let current, current.kid == failed else { throw KbuildError(.conflict, "moved on") }
                let old = try await release(good)
                var next = try await restoring(old, over: current, description: "Revert to v\(old.version): v\(current.version) failed (\(reason))", actor: actor)
                next.runsReleasePhase = nil  // what it goes back to ran already
                return next
            }
        } catch let e as KbuildError where e.code == .conflict {
            return nil
        }
    }

    func restoring(_ old: Release, over current: ReleaseEntry, description: String, actor: String) async throws -> Release {
        var next = old
        next.version = current.version + 1
        next.formation = current.release.formation
        for type in old.processTypes.keys where next.formation[type] == nil { next.formation[type] = ProcessFormation(quantity: 0) }
        // The config comes back too, as it does on Heroku: set it first so a later config:set starts from it. The
        // add-ons attached now are not rolled back: their URLs stay as they are, and reachable.
        let app = current.release.app
        var config = try await configVars(old.config)
        let now = try await configVars(current.release.config)
        for addon in try await addons(of: app) {
            for a in addon.attachments where a.app == app { config.vars[a.variable] = now.vars[a.variable] }
        }
        next.config = config == (try await configVars(old.config)) ? old.config : try await Records.put(config, in: keg)
        next.reaches = current.release.reaches
        next.relink(description: description, actor: actor)
        try await refs.set(Schema.config(app), to: next.config, actor: actor)
        return next
    }

    public func configKID(_ app: String) async throws -> KID {
        if let ref = try await refs.get(Schema.config(app)) { return ref.kid }
        return try await Records.put(ConfigVars(), in: keg)
    }

    /// Computes the next release from the current one and swaps it in; computes again when another change won.
    func change(_ app: String, actor: String, _ make: (ReleaseEntry?) async throws -> Release) async throws -> ReleaseEntry {
        let ref = try Schema.release(app)
        for _ in 0..<20 {
            let current = try await self.current(app)
            let next = try await make(current)
            let kid = try await Records.put(next, in: keg)
            do {
                let done = try await refs.compareAndSwap(ref, to: kid, expecting: current.map { .value($0.kid) } ?? .absent, actor: actor)
                return ReleaseEntry(kid: kid, release: next, time: done.time, actor: actor)
            } catch let e as KbuildError where e.code == .conflict {
                continue
            }
        }
        throw KbuildError(.conflict, "failed to change the release of \(app): too many concurrent changes")
    }
}

extension Release {
    mutating func relink(description: String, actor: String) {
        self.description = description
        createdBy = actor
        createdAt = Date()
        links = [image, config] + [sourceRecord, build].compactMap { $0 }
    }
}
