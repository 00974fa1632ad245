public import KbuildCore

// The ref schema: every name kbuild keeps state under, in one place. A ref
// names a KID; the record it names is canonical JSON (`Records`) unless
// said otherwise. "history" says what the ref's change list means.
//
//   apps/
//     <app>                        AppRecord: stack, deploy branch, build limits and network, cache epoch
//     <app>/release                Release: the current release; history = the release list v1…vN (kept whole)
//     <app>/config                 ConfigVars: config vars; each change is a version
//     <app>/source                 SourceRecord: the last push; history = the push list
//     <app>/image                  an OCI image manifest: the last image built; history = the image list
//     <app>/healthy                a Release KID: the last release whose rollout converged (where a revert goes)
//     <app>/rollout                RolloutRecord: the verdict on the latest rollout; history = every verdict
//     <app>/release-phase          ReleasePhaseRecord: the latest release-phase run; history = every run
//     <app>/processes              ProcessRecord: the last process started; history = every process ever started
//     <app>/restarts               RestartGenerations: process type → generation (`ps:restart`)
//     <app>/domains                DomainsRecord: custom domains
//     <app>/limits                 AppLimits: limits the admin set
//     <app>/router                 RouterSettings: the app's request timeout and body limit (`router:settings`)
//     <app>/certs                  AppCertificates: TLS certificates and keys for the app's domains (`certs:add`)
//     <app>/build-cache            a Keg tree: /cache as the last build left it
//     <app>/dependencies/<hex>     DependencyLayers.Record: a dependency layer only this app may use
//     <app>/buildpacks/<hex32>     GitBuildpacks.Record: the app's clone of a `.buildpacks` git URL
//   builds/
//     queue/<build hex>            BuildJob: a queued build (deleted when it finishes)
//     claims/<build hex>           BuildQueue.Claim: a worker's lease on a build
//     results/<build hex>          BuildRecord: the outcome; history = every attempt
//     dependencies/<hex>           DependencyLayers.Record: a dependency layer any app may share
//   commits/<sha>                  SourceRecord: the last push of that commit (the KID of apps/<app>/source)
//   nodes/
//     <node>                       NodeRecord: the agent's registration
//     <node>/assignment            Assignment: what the scheduler wants the node to run
//     <node>/status                NodeStatus: what the node runs; also its heartbeat (only the last is kept)
//     <node>/drain                 DrainRecord: the admin took the node out of placement (`nodes:drain`)
//   addons/<name>                  AddonRecord: an add-on (its own app runs it), its service address and attachments
//   backups/<addon>/<id>           BackupRecord: one backup of an add-on (its dump in the Keg), verified or failed
//   volumes/<app>/<name>           VolumeRecord: a persistent volume (outlives its app until its node deleted it)
//   registry/<repository>:<tag>    an OCI manifest or index: a registry tag (<repository> may hold "/")
//   stacks/<name>                  an OCI image manifest: a stack's run image
//   stacks/<name>-build            an OCI image manifest: that stack's build image
//   buildpacks/<name>              a Keg tree: a buildpack's directory
//   tokens/<name>                  AppTokenRecord: an app-scoped token (only its SHA-256)
//   pins/<name…>                   any KID: a gc pin (<name> may hold "/"; history kept whole)

/// The names of the refs above, built from their parts (the only place a
/// ref name is spelled), and `Key` to read one back.
public enum Schema {
    public static let apps = try! RefName("apps")
    public static let nodes = try! RefName("nodes")
    public static let commits = try! RefName("commits")
    public static let stacks = try! RefName("stacks")
    public static let buildpacks = try! RefName("buildpacks")
    public static let tokens = try! RefName("tokens")
    public static let registry = try! RefName("registry")
    public static let volumes = try! RefName("volumes")
    public static let addons = try! RefName("addons")
    public static let buildQueue = try! RefName("builds/queue")
    public static let buildResults = try! RefName("builds/results")

    /// The fields of an app kept as refs of their own, `apps/<app>/<field>`.
    public enum AppField: String, Sendable, CaseIterable {
        case release, config, source, image, healthy, rollout, processes, restarts, domains, limits, router, certs
        case releasePhase = "release-phase"
        case buildCache = "build-cache"
        /// The last time someone was shown the config's values (each a change: the history is the access log).
        case configAccess = "config-access"
    }

    public static func app(_ app: String) throws -> RefName { try RefName("apps/\(app)") }
    public static func app(_ app: String, _ field: AppField) throws -> RefName { try RefName("apps/\(app)/\(field.rawValue)") }
    /// The current release; its history is the release list.
    public static func release(_ app: String) throws -> RefName { try self.app(app, .release) }
    public static func config(_ app: String) throws -> RefName { try self.app(app, .config) }
    /// The last push; its history is the push list.
    public static func source(_ app: String) throws -> RefName { try self.app(app, .source) }
    /// The last image built; its history is the image list.
    public static func image(_ app: String) throws -> RefName { try self.app(app, .image) }
    /// The last release of an app whose every process became healthy: where a revert goes.
    public static func healthy(_ app: String) throws -> RefName { try self.app(app, .healthy) }
    /// How the current release's rollout went (`RolloutRecord`); its history is every rollout's.
    public static func rollout(_ app: String) throws -> RefName { try self.app(app, .rollout) }
    /// Every process started for the app: its history is the app's process list, for trace.
    public static func processes(_ app: String) throws -> RefName { try self.app(app, .processes) }
    /// The release phase of the app's newest release that has one; its history keeps every run.
    public static func releasePhase(_ app: String) throws -> RefName { try self.app(app, .releasePhase) }
    /// Rolling restarts: process type → generation (`ps:restart`).
    public static func restarts(_ app: String) throws -> RefName { try self.app(app, .restarts) }
    /// The app's custom domains (`DomainsRecord`, `domains:add`).
    public static func domains(_ app: String) throws -> RefName { try self.app(app, .domains) }
    public static func limits(_ app: String) throws -> RefName { try self.app(app, .limits) }
    /// The app's TLS certificates with their keys (`AppCertificates`, `certs:add`): served by SNI.
    public static func certs(_ app: String) throws -> RefName { try self.app(app, .certs) }
    /// How the router treats the app's requests (`RouterSettings`, `router:settings`).
    public static func router(_ app: String) throws -> RefName { try self.app(app, .router) }
    public static func buildCache(_ app: String) throws -> RefName { try self.app(app, .buildCache) }
    public static func appDependencies(_ app: String) throws -> RefName { try RefName("apps/\(app)/dependencies") }
    public static func appDependency(_ app: String, _ key: KID) throws -> RefName { try RefName("apps/\(app)/dependencies/\(key.hex)") }
    public static func appBuildpacks(_ app: String) throws -> RefName { try RefName("apps/\(app)/buildpacks") }
    public static func appBuildpack(_ app: String, hash: String) throws -> RefName { try RefName("apps/\(app)/buildpacks/\(hash)") }

    public static func buildQueued(_ build: KID) throws -> RefName { try RefName("builds/queue/\(build.hex)") }
    public static func buildClaim(_ build: KID) throws -> RefName { try RefName("builds/claims/\(build.hex)") }
    public static func buildResult(_ build: KID) throws -> RefName { try RefName("builds/results/\(build.hex)") }
    public static func sharedDependency(_ key: KID) throws -> RefName { try RefName("builds/dependencies/\(key.hex)") }

    public static func commit(_ sha: String) throws -> RefName { try RefName("commits/\(sha)") }
    public static func node(_ name: String) throws -> RefName { try RefName("nodes/\(name)") }
    public static func assignment(_ node: String) throws -> RefName { try RefName("nodes/\(node)/assignment") }
    public static func status(_ node: String) throws -> RefName { try RefName("nodes/\(node)/status") }
    /// Present while the node is drained: nothing new is placed there and what runs there moves.
    public static func drain(_ node: String) throws -> RefName { try RefName("nodes/\(node)/drain") }
    public static func addon(_ name: String) throws -> RefName { try RefName("addons/\(name)") }
    public static func backups(_ addon: String) throws -> RefName { try RefName("backups/\(addon)") }
    public static func backup(_ addon: String, _ id: String) throws -> RefName { try RefName("backups/\(addon)/\(id)") }
    public static func volumes(_ app: String) throws -> RefName { try RefName("volumes/\(app)") }
    public static func volume(_ app: String, _ name: String) throws -> RefName { try RefName("volumes/\(app)/\(name)") }
    public static func registryTag(_ repository: String, _ tag: String) throws -> RefName { try RefName("registry/\(repository):\(tag)") }
    public static func stack(_ name: String) throws -> RefName { try RefName("stacks/\(name)") }
    public static func buildpack(_ name: String) throws -> RefName { try RefName("buildpacks/\(name)") }
    public static func token(_ name: String) throws -> RefName { try RefName("tokens/\(name)") }
    public static func pin(_ name: String) throws -> RefName { try RefName("pins/\(name)") }

    /// A ref name read back into what it names: the one parser of the schema.
    public enum Key: Equatable, Sendable {
        case app(String)
        case appField(String, AppField)
        case appDependency(app: String, key: String)
        case appBuildpack(app: String, hash: String)
        case buildQueued(KID)
        case buildClaim(KID)
        case buildResult(KID)
        case sharedDependency(String)
        case commit(String)
        case node(String)
        case assignment(node: String)
        case status(node: String)
        case drain(node: String)
        case volume(app: String, name: String)
        case addon(String)
        case backup(addon: String, id: String)
        case registryTag(repository: String, tag: String)
        case stack(String)
        case buildpack(String)
        case token(String)
        case pin(String)
        /// Not a name of the schema (set by hand with `kbuild ref set`, or a newer kbuild's).
        case other

        public init(_ name: RefName) {
            let parts = name.rawValue.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            func rest(from i: Int) -> String { parts[i...].joined(separator: "/") }
            switch (parts[0], parts.count) {
            case ("apps", 2): self = .app(parts[1])
            case ("apps", 3): self = AppField(rawValue: parts[2]).map { .appField(parts[1], $0) } ?? .other
            case ("apps", 4) where parts[2] == "dependencies": self = .appDependency(app: parts[1], key: parts[3])
            case ("apps", 4) where parts[2] == "buildpacks": self = .appBuildpack(app: parts[1], hash: parts[3])
            case ("builds", 3):
                // Only the bare 64 hex digits the builders write (KID(parsing:) also takes K- and sha256: forms).
                let kid = (try? KID(parsing: parts[2])).flatMap { $0.hex == parts[2] ? $0 : nil }
                switch (parts[1], kid) {
                case ("queue", let kid?): self = .buildQueued(kid)
                case ("claims", let kid?): self = .buildClaim(kid)
                case ("results", let kid?): self = .buildResult(kid)
                case ("dependencies", _): self = .sharedDependency(parts[2])
                default: self = .other
                }
            case ("commits", 2): self = .commit(parts[1])
            case ("nodes", 2): self = .node(parts[1])
            case ("nodes", 3) where parts[2] == "assignment": self = .assignment(node: parts[1])
            case ("nodes", 3) where parts[2] == "status": self = .status(node: parts[1])
            case ("nodes", 3) where parts[2] == "drain": self = .drain(node: parts[1])
            case ("volumes", 3): self = .volume(app: parts[1], name: parts[2])
            case ("addons", 2): self = .addon(parts[1])
            case ("backups", 3): self = .backup(addon: parts[1], id: parts[2])
            case ("registry", 2...):
                let path = rest(from: 1)
                guard let colon = path.lastIndex(of: ":"), !path[colon...].contains("/") else { self = .other; return }
                self = .registryTag(repository: String(path[..<colon]), tag: String(path[path.index(after: colon)...]))
            case ("stacks", 2): self = .stack(parts[1])
            case ("buildpacks", 2): self = .buildpack(parts[1])
            case ("tokens", 2): self = .token(parts[1])
            case ("pins", 2...): self = .pin(rest(from: 1))
            default: self = .other
            }
        }
    }
}
