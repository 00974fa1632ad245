public import KbuildCore
public import Foundation

/// The JSON the API speaks (`/api/v1/…`), shared by the server and the client.
public enum API {
    public static let prefix = "/api/v1"
    /// Largest JSON body the API reads (a bigger one gets 413).
    public static let maxBody = 1 << 20
    /// The version of this API: every answer under `/api/` carries it in
    /// `versionHeader`, and a client refuses a server of another version.
    public static let version = 1
    public static let versionHeader = "Kbuild-API"

    /// The body of every error answer: `{"error":{"code":…,"message":…}}`.
    public struct ErrorAnswer: Codable, Sendable, Equatable {
        public struct Detail: Codable, Sendable, Equatable {
            public var code: String
            public var message: String
        }
        public var error: Detail

        public init(code: String, message: String) { error = Detail(code: code, message: message) }
    }

    /// `POST /apps` (`apps:create`): only the name is required.
    public struct CreateApp: Codable, Sendable, Equatable {
        public var name: String
        /// A stack or an alias (`debian`: the newest debian-N the server has).
        public var stack: String?
        public var deployBranch: String?
        /// `egress` (the default) or `none`.
        public var buildNetwork: String?
        public var build: BuildLimits?
        public var maxFileSize: UInt64?

        public init(name: String, stack: String? = nil, deployBranch: String? = nil, buildNetwork: String? = nil,
                    build: BuildLimits? = nil, maxFileSize: UInt64? = nil) {
            self.name = name
            self.stack = stack
            self.deployBranch = deployBranch
            self.buildNetwork = buildNetwork
            self.build = build
            self.maxFileSize = maxFileSize
        }
    }

    /// `apps:set` (`PATCH /apps/APP`): the settings to change, each optional.
    public struct AppSettings: Codable, Sendable, Equatable {
        /// `egress` or `none`.
        public var buildNetwork: String?
        /// A stack name (`debian` is the newest `debian-N`).
        public var stack: String?

        public init(buildNetwork: String?, stack: String?) {
            self.buildNetwork = buildNetwork
            self.stack = stack
        }
    }

    /// What `builds:cache:purge` dropped (`POST /apps/APP/build-cache/purge`).
    public struct CachePurged: Codable, Sendable, Equatable {
        public var cacheEpoch: Int
        public var dependencyLayers: Int
        public var gitBuildpacks: Int

        public init(cacheEpoch: Int, dependencyLayers: Int, gitBuildpacks: Int) {
            self.cacheEpoch = cacheEpoch
            self.dependencyLayers = dependencyLayers
            self.gitBuildpacks = gitBuildpacks
        }
    }

    /// One of an app's images (`image ls`, `GET /apps/APP/images`), newest first.
    public struct ImageInfo: Codable, Sendable, Equatable {
        public var image: String
        public var createdAt: Date
        public var commit: String?
        public var source: String?
        public var build: String?
        public var size: Int64

        public init(image: String, createdAt: Date, commit: String?, source: String?, build: String?, size: Int64) {
            self.image = image
            self.createdAt = createdAt
            self.commit = commit
            self.source = source
            self.build = build
            self.size = size
        }
    }

    /// A token as `tokens` lists it (never the token itself).
    public struct TokenInfo: Codable, Sendable, Equatable {
        public var name: String
        public var apps: [String]
        public var node: String?
        public var worker: String?
        public var createdBy: String
        public var createdAt: Date

        public init(name: String, apps: [String], node: String?, worker: String? = nil, createdBy: String, createdAt: Date) {
            self.name = name
            self.apps = apps
            self.node = node
            self.worker = worker
            self.createdBy = createdBy
            self.createdAt = createdAt
        }
    }

    /// `tokens:create` (`POST /tokens`).
    public struct CreateToken: Codable, Sendable, Equatable {
        public var name: String
        public var apps: [String]

        public init(name: String, apps: [String]) {
            self.name = name
            self.apps = apps
        }
    }

    /// A token just made: shown once.
    public struct CreatedToken: Codable, Sendable, Equatable {
        public var name: String
        public var token: String

        public init(name: String, token: String) {
            self.name = name
            self.token = token
        }
    }

    /// The answer to `POST /apps`: the app as made, and where to push.
    public struct CreatedApp: Codable, Sendable, Equatable {
        public var app: AppRecord
        /// The git remote over HTTP, e.g. `http://host:7070/web.git`.
        public var gitURL: String

        public init(app: AppRecord, gitURL: String) {
            self.app = app
            self.gitURL = gitURL
        }
    }

    /// One running process of any app (`GET /ps`, `ps --all`): where it runs and what it came from.
    public struct RunningProcess: Codable, Sendable, Equatable {
        public var app: String
        public var name: String
        public var node: String
        public var hostPID: Int32
        /// The process KID (`kbuild trace` takes it).
        public var process: KID
        public var release: Int64
        public var commit: String?
        public var state: String?

        public init(app: String, name: String, node: String, hostPID: Int32, process: KID, release: Int64, commit: String?, state: String?) {
            self.app = app
            self.name = name
            self.node = node
            self.hostPID = hostPID
            self.process = process
            self.release = release
            self.commit = commit
            self.state = state
        }
    }

    /// How a release's release phase went (`releases:output`): its command, state and output.
    public struct ReleaseOutput: Codable, Sendable, Equatable {
        public var version: Int64
        public var command: String
        public var state: String
        public var node: String
        public var exitStatus: Int32?
        public var reason: String?
        /// The output (its last MiB), as text.
        public var output: String
        public var startedAt: Date
        public var finishedAt: Date?

        public init(version: Int64, command: String, state: String, node: String, exitStatus: Int32?, reason: String?, output: String,
                    startedAt: Date, finishedAt: Date?) {
            self.version = version
            self.command = command
            self.state = state
            self.node = node
            self.exitStatus = exitStatus
            self.reason = reason
            self.output = output
            self.startedAt = startedAt
            self.finishedAt = finishedAt
        }
    }

    public struct ReleaseInfo: Codable, Sendable, Equatable {
        public var version: Int64
        public var kid: KID
        public var image: KID
        public var config: KID
        public var commit: String?
        public var description: String
        public var createdBy: String
        public var createdAt: Date
        public var processTypes: [String: String]
        public var formation: [String: ProcessFormation]
        /// "current", "healthy", "reverted: …", "failed: …" or "".
        public var status: String
        /// The build its image came from (nil for a release that changed only config or formation of one without).
        public var build: KID?
        /// The commit's message and author (in the answer for one release, `GET …/releases/vN`).
        public var message: String?
        public var author: String?

        public init(_ entry: ReleaseEntry, status: String) {
            build = entry.release.build
            version = entry.version
            kid = entry.kid
            image = entry.release.image
            config = entry.release.config
            commit = entry.release.commit
            description = entry.release.description
            createdBy = entry.actor
            createdAt = entry.time
            processTypes = entry.release.processTypes
            formation = entry.release.formation
            self.status = status
        }
    }

    public struct ProcessInfo: Codable, Sendable, Equatable {
        public var node: String
        public var id: String
        public var name: String
        public var type: String
        public var state: ProcessState
        public var release: Int64?
        public var hostPID: Int32?
        public var port: Int?
        /// Where the process listens, when not at its node's address (a network of its own).
        public var address: String?
        public var restarts: Int
        public var process: KID?
        public var since: Date

        public init(node: String, status: ProcessStatus, release: Int64?) {
            self.node = node
            id = status.id
            name = status.name
            type = status.type
            state = status.state
            self.release = release
            hostPID = status.hostPID
            port = status.port
            address = status.address
            restarts = status.restarts
            process = status.process
            since = status.since
        }
    }

    public struct AppInfo: Codable, Sendable, Equatable {
        public var name: String
        public var stack: String
        public var deployBranch: String
        public var createdBy: String
        public var createdAt: Date
        public var release: ReleaseInfo?
        public var rollout: RolloutRecord?
        public var domains: [String]
        /// Its processes on every node (empty in the app list, `GET /apps`).
        public var processes: [ProcessInfo]
        /// What its builds reach (`egress` or `none`); nil from a server older than this field.
        public var buildNetwork: String?

        public init(name: String, stack: String, deployBranch: String, createdBy: String, createdAt: Date, release: ReleaseInfo?,
                    rollout: RolloutRecord?, domains: [String], processes: [ProcessInfo], buildNetwork: String? = nil) {
            self.buildNetwork = buildNetwork
            self.name = name
            self.stack = stack
            self.deployBranch = deployBranch
            self.createdBy = createdBy
            self.createdAt = createdAt
            self.release = release
            self.rollout = rollout
            self.domains = domains
            self.processes = processes
        }
    }

    public struct ConfigChange: Codable, Sendable {
        public var set: [String: String]
        public var unset: [String]
        public init(set: [String: String], unset: [String]) {
            self.set = set
            self.unset = unset
        }
    }

    public struct ConfigAnswer: Codable, Sendable {
        public var vars: [String: String]
        public var release: Int64?
        public init(vars: [String: String], release: Int64?) {
            self.vars = vars
            self.release = release
        }
    }

    public struct Scale: Codable, Sendable {
        public var changes: [String]
        public init(changes: [String]) { self.changes = changes }
    }

    public struct Rollback: Codable, Sendable {
        public var version: Int64?
        public init(version: Int64?) { self.version = version }
    }

    public struct Restart: Codable, Sendable {
        public var type: String?
        public init(type: String?) { self.type = type }
    }

    /// An app's limits (`apps:limits`), and what it uses of them.
    public struct Limits: Codable, Sendable, Equatable {
        public var kegBytes: UInt64?
        public var memory: UInt64?
        public var cpus: Double?
        public var builds: Int?
        /// Bytes of volumes (nil: `VolumeRecord.defaultAppLimit`).
        public var volumeBytes: UInt64?
        /// Filled in by the server: what the app uses now.
        public var used: Usage?

        public struct Usage: Codable, Sendable, Equatable {
            public var kegBytes: UInt64
            public var memory: UInt64
            public var cpus: Double
            public var builds: Int
            public var volumeBytes: UInt64?
            public init(kegBytes: UInt64, memory: UInt64, cpus: Double, builds: Int, volumeBytes: UInt64? = nil) {
                self.kegBytes = kegBytes
                self.memory = memory
                self.cpus = cpus
                self.builds = builds
                self.volumeBytes = volumeBytes
            }
        }

        public init(kegBytes: UInt64? = nil, memory: UInt64? = nil, cpus: Double? = nil, builds: Int? = nil, volumeBytes: UInt64? = nil, used: Usage? = nil) {
            self.kegBytes = kegBytes
            self.memory = memory
            self.cpus = cpus
            self.builds = builds
            self.volumeBytes = volumeBytes
            self.used = used
        }
    }

    /// `POST /api/v1/apps/APP/run`. As JSON, the command runs with no input. Sent
    /// in a `Kbuild-Run` header (base64 JSON) with a body of `Frame`s, the body is
    /// its input as it is typed: `stdin` frames (an empty one ends the input) and
    /// `resize` frames (rows and columns, 2 bytes each, big-endian) for a terminal.
    public struct Run: Codable, Sendable {
        public var command: [String]
        /// Run on a terminal of its own (as `heroku run bash` does): its output is the terminal's, one stream.
        public var tty: Bool?
        public var rows: UInt16?
        public var columns: UInt16?
        /// The TERM of the terminal the client is on.
        public var term: String?

        public init(command: [String], tty: Bool? = nil, rows: UInt16? = nil, columns: UInt16? = nil, term: String? = nil) {
            self.command = command
            self.tty = tty
            self.rows = rows
            self.columns = columns
            self.term = term
        }

        public static let header = "Kbuild-Run"
    }

    /// `addons:create KIND --app APP [--as NAME] [--stack S] [--size 1G]`.
    public struct AddonCreate: Codable, Sendable {
        public var kind: String
        public var `as`: String?
        public var stack: String?
        public var size: UInt64?
        public init(kind: String, as name: String? = nil, stack: String? = nil, size: UInt64? = nil) {
            self.kind = kind
            self.as = name
            self.stack = stack
            self.size = size
        }
    }

    /// `addons:attach ADDON --app APP [--as NAME]` (`POST /apps/APP/attachments`).
    /// `pg:backups:schedule`: `at` as `HH:MM [ZONE]`.
    public struct BackupScheduleSet: Codable, Sendable {
        public var at: String
        public var keep: Int?
        public init(at: String, keep: Int?) {
            self.at = at
            self.keep = keep
        }
    }

    /// `addons:upgrade`: the major version to move to.
    public struct AddonUpgrade: Codable, Sendable {
        public var version: String
        public init(version: String) { self.version = version }
    }

    public struct AddonAttach: Codable, Sendable {
        public var addon: String
        public var `as`: String?
        public init(addon: String, as name: String? = nil) {
            self.addon = addon
            self.as = name
        }
    }

    /// An add-on with how its process is (its password is never in it).
    public struct AddonInfo: Codable, Sendable, Equatable {
        public var record: AddonRecord
        /// Its process's state (starting, healthy, …), or "not running" / "unavailable: …".
        public var state: String
        public var node: String?
        public init(record: AddonRecord, state: String, node: String?) {
            self.record = record
            self.state = state
            self.node = node
        }
    }

    /// `volumes:create APP NAME --size 1G [--node N]`.
    public struct VolumeCreate: Codable, Sendable {
        public var name: String
        public var size: UInt64
        public var node: String?
        public init(name: String, size: UInt64, node: String? = nil) {
            self.name = name
            self.size = size
            self.node = node
        }
    }

    /// `volumes:mount APP NAME PATH [--type web]`.
    public struct VolumeMountRequest: Codable, Sendable {
        public var path: String
        public var types: [String]?
        public init(path: String, types: [String]? = nil) {
            self.path = path
            self.types = types
        }
    }

    /// A volume with what its node says of it and where the current release mounts it.
    public struct VolumeInfo: Codable, Sendable, Equatable {
        public var record: VolumeRecord
        /// creating, ready, failed, destroying, or unknown (its node is not reporting).
        public var state: String
        public var used: UInt64?
        public var error: String?
        public var mounts: [VolumeMount]
        public init(record: VolumeRecord, state: String, used: UInt64?, error: String?, mounts: [VolumeMount]) {
            self.record = record
            self.state = state
            self.used = used
            self.error = error
            self.mounts = mounts
        }
    }

    public struct Domain: Codable, Sendable {
        public var domain: String
        public init(domain: String) { self.domain = domain }
    }

    /// `nodes:join-token NODE [--address ADDR]`: the only address the node may register.
    public struct JoinRequest: Codable, Sendable, Equatable {
        public var address: String?
        public init(address: String?) { self.address = address }
    }

    /// A node's join token (`kbuild nodes:join-token`), shown once.
    public struct JoinToken: Codable, Sendable {
        public var node: String
        public var token: String
        /// The control plane's https URL and its CA's hash (nil when it serves no TLS).
        public var url: String?
        public var caHash: String?

        public init(node: String, token: String, url: String?, caHash: String?) {
            self.node = node
            self.token = token
            self.url = url
            self.caHash = caHash
        }
    }

    /// An SSH key that may push (`kbuild keys`).
    public struct SSHKey: Codable, Sendable, Equatable {
        public var name: String
        public var type: String
        public var fingerprint: String
        public init(name: String, type: String, fingerprint: String) {
            self.name = name
            self.type = type
            self.fingerprint = fingerprint
        }
    }

    /// `keys:add`: the public key's line, and the name it is kept under.
    public struct AddKey: Codable, Sendable {
        public var publicKey: String
        public var name: String
        public init(publicKey: String, name: String) {
            self.publicKey = publicKey
            self.name = name
        }
    }

    /// `buildpack add`: a tree already sent to the control plane's Keg (a
    /// directory on the CLI's machine), or a git URL the control plane clones.
    public struct AddBuildpack: Codable, Sendable {
        public var name: String?
        public var tree: KID?
        public var gitURL: String?
        public init(name: String?, tree: KID? = nil, gitURL: String? = nil) {
            self.name = name
            self.tree = tree
            self.gitURL = gitURL
        }
    }

    /// A build worker's join token (`kbuild workers:join-token`), shown once.
    public struct WorkerJoinToken: Codable, Sendable {
        public var worker: String
        public var token: String
        /// The control plane's https URL and its CA's hash (nil when it serves no TLS).
        public var url: String?
        public var caHash: String?

        public init(worker: String, token: String, url: String?, caHash: String?) {
            self.worker = worker
            self.token = token
            self.url = url
            self.caHash = caHash
        }
    }

    /// `GET /api/v1/apps/APP/push-terms`: what the git hook needs before it
    /// reads a push into the Keg (the branch that deploys, and how much the
    /// tree may hold).
    public struct PushTerms: Codable, Sendable, Equatable {
        public var deployBranch: String
        public var maxFileSize: UInt64
        /// Bytes the app may still add to the Keg (`apps:limits --keg`); nil: no limit.
        public var kegBytesLeft: UInt64?
        /// The app's Keg limit and what it holds, for the message when a tree is over what is left.
        public var kegBytes: UInt64?
        public var kegBytesHeld: UInt64?

        public init(deployBranch: String, maxFileSize: UInt64, kegBytesLeft: UInt64?, kegBytes: UInt64?, kegBytesHeld: UInt64?) {
            self.deployBranch = deployBranch
            self.maxFileSize = maxFileSize
            self.kegBytesLeft = kegBytesLeft
            self.kegBytes = kegBytes
            self.kegBytesHeld = kegBytesHeld
        }
    }

    /// `POST /api/v1/apps/APP/pushes` (admin only: the git hook of the
    /// control plane's machine): a push to the deploy branch, its tree
    /// already in the Keg. The answer streams `Frame`s: progress text as
    /// `stderr`, a rejection as `error`, and the exit status last.
    public struct Push: Codable, Sendable, Equatable {
        /// The pushed commit, its tree (the source KID) and who pushed it.
        public var source: SourceRecord

        public init(source: SourceRecord) { self.source = source }
    }

    public struct NodeInfo: Codable, Sendable {
        public var record: NodeRecord
        public var alive: Bool
        public var processes: Int
        public var heartbeat: Date?
        /// Drained by the admin (`nodes:drain`).
        public var draining: Bool

        public init(record: NodeRecord, alive: Bool, processes: Int, heartbeat: Date?, draining: Bool) {
            self.record = record
            self.alive = alive
            self.processes = processes
            self.heartbeat = heartbeat
            self.draining = draining
        }
    }
}

extension API {
    /// `POST /api/v1/state/cas`: one compare-and-swap of a ref.
    public struct CompareAndSwap: Codable, Sendable, Equatable {
        public var name: RefName
        /// The new value; nil deletes the ref.
        public var kid: KID?
        public var expecting: Expectation
        public var actor: String

        public init(name: RefName, kid: KID?, expecting: RefExpectation, actor: String) {
            self.name = name
            self.kid = kid
            self.expecting = Expectation(expecting)
            self.actor = actor
        }
    }

    /// A `RefExpectation` on the wire: `{"kind":"any"|"absent"|"value"|"revision", "kid"?, "revision"?}`.
    public struct Expectation: Codable, Sendable, Equatable {
        public var kind: String
        public var kid: KID?
        public var revision: Revision?

        public init(_ e: RefExpectation) {
            switch e {
            case .any: kind = "any"
            case .absent: kind = "absent"
            case .value(let k): kind = "value"; kid = k
            case .revision(let r): kind = "revision"; revision = r
            }
        }

        public func expectation() throws -> RefExpectation {
            switch (kind, kid, revision) {
            case ("any", nil, nil): return .any
            case ("absent", nil, nil): return .absent
            case ("value", let kid?, nil): return .value(kid)
            case ("revision", nil, let revision?): return .revision(revision)
            default: throw KbuildError(.invalidArgument, "invalid expectation \(kind.debugQuoted): want any, absent, value with a kid, or revision with a revision")
            }
        }
    }

    /// `GET /api/v1/state/changes`: the changes after a revision, and the store's revision when they were read.
    public struct Changes: Codable, Sendable, Equatable {
        public var changes: [RefChange]
        public var revision: Revision

        public init(changes: [RefChange], revision: Revision) {
            self.changes = changes
            self.revision = revision
        }
    }
}

extension API {
    /// The state routes' JSON: dates as seconds since 1970 with their fraction (exact to the microsecond).
    public static func stateEncoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .secondsSince1970
        return e
    }

    public static func stateDecoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .secondsSince1970
        return d
    }
}

extension API {
    /// An app's recent requests through the router (`GET /api/v1/apps/APP/metrics`, the dashboard's app page).
    public struct RouterTraffic: Codable, Sendable, Equatable {
        public var app: String
        /// Minutes the recent figures cover.
        public var windowMinutes: Int
        /// Responses in the window by status class ("2xx": 10).
        public var recent: [String: UInt64]
        /// Latency percentiles in the window, in milliseconds (nil: no request in it).
        public var p50: Double?
        public var p95: Double?
        public var p99: Double?
        /// Responses and body bytes since the router started.
        public var total: UInt64
        public var bytes: UInt64

        public init(app: String, windowMinutes: Int, recent: [String: UInt64], p50: Double?, p95: Double?, p99: Double?, total: UInt64,
                    bytes: UInt64) {
            self.app = app
            self.windowMinutes = windowMinutes
            self.recent = recent
            self.p50 = p50
            self.p95 = p95
            self.p99 = p99
            self.total = total
            self.bytes = bytes
        }
    }
}
