public import KbuildCore
public import Foundation

/// A buildpack as a build uses it: its name and the Keg tree of its directory.
public struct Buildpack: Codable, Sendable, Equatable {
    public var name: String
    public var tree: KID
    public init(name: String, tree: KID) {
        self.name = name
        self.tree = tree
    }
}

/// Everything a build's result depends on, and nothing else. Its KID is the
/// build KID: the same source, stack, buildpacks, environment and network
/// give the same build, which then runs once (memoised). The commit is not
/// an input: a new commit of the same tree reuses the build.
public struct BuildInputs: Codable, Sendable, Equatable {
    public var kind = "kbuild.build.inputs/v1"
    /// The source tree.
    public var source: KID
    public var stackName: String
    /// The stack image: the app's image is it plus the build's layers.
    public var stack: KID
    /// The image the steps run on: the stack's build image (compilers,
    /// headers), or nil when the stack has none and builds run on it.
    public var buildImage: KID?
    /// In order. With `detect`, the first whose `bin/detect` succeeds is used;
    /// without (the app chose them in `.buildpacks`), all run.
    public var buildpacks: [Buildpack]
    public var detect: Bool
    /// Build config vars, given to `bin/compile` as ENV_DIR.
    public var environment: [String: String]
    /// The app's cache epoch (`builds:cache:purge` turns it), nil before the first purge:
    /// after a purge, nothing built before is reused.
    public var cacheEpoch: Int?
    /// The app whose build cache and own dependency layers the build uses, when it has
    /// any: a tenant writes its cache, so such a build is memoised for that app alone. Nil:
    /// the build starts from an empty cache and shared layers, and any app may reuse it.
    public var cacheScope: String?
    /// Whether the build could reach the network: a `BuildNetwork`'s raw value.
    public var network: String

    public init(source: KID, stackName: String, stack: KID, buildpacks: [Buildpack], detect: Bool,
                environment: [String: String] = [:], network: String = "none", buildImage: KID? = nil, cacheEpoch: Int? = nil,
                cacheScope: String? = nil) {
        self.cacheEpoch = cacheEpoch
        self.cacheScope = cacheScope
        self.source = source
        self.stackName = stackName
        self.stack = stack
        self.buildImage = buildImage
        self.buildpacks = buildpacks
        self.detect = detect
        self.environment = environment
        self.network = network
    }

    public var bytes: [UInt8] { (try? canonicalJSON(self)) ?? [] }
    public var kid: KID { KID(hashing: bytes) }
}

/// The network a build has.
public enum BuildNetwork: String, Codable, Sendable, CaseIterable {
    /// A namespace of its own whose only way out is NAT to the outside: never the host, kbuild or another app.
    case egress
    /// Loopback only.
    case none

    public init(parsing text: String) throws {
        guard let mode = BuildNetwork(rawValue: text) else {
            throw KbuildError(.invalidArgument, "invalid build network \(text.debugQuoted): want egress or none")
        }
        self = mode
    }
}

/// What a worker needs besides the inputs: whose cache to use, and its limits.
public struct BuildJob: Codable, Sendable, Equatable {
    public var kind = "kbuild.build.job/v1"
    public var inputs: BuildInputs
    public var app: String
    public var limits: BuildLimits
    public var requestedBy: String
    public var requestedAt: Date

    public init(inputs: BuildInputs, app: String, limits: BuildLimits, requestedBy: String, requestedAt: Date = Date()) {
        self.inputs = inputs
        self.app = app
        self.limits = limits
        self.requestedBy = requestedBy
        self.requestedAt = requestedAt
    }
}

/// Limits of each step of a build (detect, compile, release).
public struct BuildLimits: Codable, Sendable, Equatable {
    public var memory: UInt64
    public var cpus: Double?
    public var pids: Int
    /// Seconds for the whole build.
    public var timeout: Double
    /// Bytes a build may write: /app, /cache and /env together, on a disk of
    /// that size (`ScratchDisk`); the app layer and the cache kept are bounded
    /// by it too.
    public var disk: UInt64

    public static let defaultDisk: UInt64 = 2 << 30

    public init(memory: UInt64 = 2 << 30, cpus: Double? = nil, pids: Int = 4096, timeout: Double = 900, disk: UInt64 = BuildLimits.defaultDisk) {
        self.memory = memory
        self.cpus = cpus
        self.pids = pids
        self.timeout = timeout
        self.disk = disk
    }

    enum CodingKeys: String, CodingKey { case memory, cpus, pids, timeout, disk }

    /// Records written before `disk` existed get the default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        memory = try c.decode(UInt64.self, forKey: .memory)
        cpus = try c.decodeIfPresent(Double.self, forKey: .cpus)
        pids = try c.decode(Int.self, forKey: .pids)
        timeout = try c.decode(Double.self, forKey: .timeout)
        disk = try c.decodeIfPresent(UInt64.self, forKey: .disk) ?? BuildLimits.defaultDisk
    }
}

/// The outcome of a build, kept for good (the ref `builds/results/<build hex>`
/// and its history). `links` names every object it depends on, so gc keeps
/// them: the log, the app layer, the source, the stack, the buildpacks.
public struct BuildRecord: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable { case succeeded, failed }

    public var kind = "kbuild.build/v1"
    public var build: KID
    public var inputs: BuildInputs
    public var app: String
    public var status: Status
    /// Why it failed, in one line.
    public var error: String?
    /// The build log (a blob).
    public var log: KID?
    /// The app layer: /app after compile (the dependency directories left out).
    public var layer: Descriptor?
    /// Dependency layers (`DependencyLayers`), under the app layer, in order.
    public var dependencyLayers: [Descriptor]?
    /// Buildpacks that ran, in order (the detected one, or the chosen ones).
    public var used: [Buildpack]
    /// Process types: the buildpacks' defaults overridden by the Procfile.
    public var processTypes: [String: String]
    /// `config_vars` of `bin/release`, for the image's Env.
    public var configVars: [String: String]
    public var worker: String
    public var startedAt: Date
    public var finishedAt: Date
    public var links: [KID]

    public init(build: KID, inputs: BuildInputs, app: String, status: Status, error: String? = nil, log: KID? = nil, layer: Descriptor? = nil,
                used: [Buildpack] = [], processTypes: [String: String] = [:], configVars: [String: String] = [:], worker: String,
                startedAt: Date, finishedAt: Date, links: [KID] = []) {
        self.build = build
        self.inputs = inputs
        self.app = app
        self.status = status
        self.error = error
        self.log = log
        self.layer = layer
        self.used = used
        self.processTypes = processTypes
        self.configVars = configVars
        self.worker = worker
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.links = links
    }

}

/// One push of one commit: what the pre-receive hook records before building.
/// Ref `apps/APP/source` (its history is the push list) and `commits/<sha>`.
public struct SourceRecord: Codable, Sendable, Equatable {
    public var kind = "kbuild.source/v1"
    public var app: String
    public var source: KID
    public var commit: String
    public var author: String
    public var authorEmail: String
    public var message: String
    public var committedAt: Date
    public var pushedBy: String
    public var pushedAt: Date
    /// The pushed ref, e.g. refs/heads/main.
    public var ref: String
    /// Where the repository is, as users name it (the push URL).
    public var repository: String
    public var files: Int
    public var bytes: UInt64
    public var links: [KID]

    public init(app: String, source: KID, commit: String, author: String, authorEmail: String, message: String,
                committedAt: Date, pushedBy: String, pushedAt: Date, ref: String, repository: String, files: Int, bytes: UInt64) {
        self.app = app
        self.source = source
        self.commit = commit
        self.author = author
        self.authorEmail = authorEmail
        self.message = message
        self.committedAt = committedAt
        self.pushedBy = pushedBy
        self.pushedAt = pushedAt
        self.ref = ref
        self.repository = repository
        self.files = files
        self.bytes = bytes
        self.links = [source]
    }
}
