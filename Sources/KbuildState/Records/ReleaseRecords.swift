public import KbuildCore
public import Foundation

/// One release of an app: what runs (an image), with which config, how many
/// of each process type. Immutable, stored in the Keg; `apps/APP/release`
/// points at the current one, and that ref's history is the release list
/// (v1, v2, … are its versions). A rollback or revert is a new release with
/// an older release's image and config.
public struct Release: Codable, Sendable, Equatable {
    public var kind = "kbuild.release/v1"
    public var app: String
    /// vN: the version of `apps/APP/release` this release was written as.
    public var version: Int64
    /// The OCI image (manifest) KID.
    public var image: KID
    /// The config vars (a `ConfigVars` object), injected when a process starts.
    public var config: KID
    /// Process type → command, from the build (Procfile, bin/release).
    public var processTypes: [String: String]
    /// Process type → how many and how big.
    public var formation: [String: ProcessFormation]
    /// From app.json; nil: a web process is healthy once its port accepts connections.
    public var healthchecks: [String: HealthCheck]
    /// The pushed source (a `SourceRecord`), the build, and its commit, for trace.
    public var sourceRecord: KID?
    public var build: KID?
    public var commit: String?
    /// What made it: "Deploy 1a2b3c4", "Set FOO, BAR config vars", "Rollback to v3", …
    public var description: String
    public var createdBy: String
    public var createdAt: Date
    /// Objects this record keeps alive (for gc).
    public var links: [KID]
    /// Whether its `release:` command runs before it rolls out: true for a
    /// deploy, a config change or a rollback of an app that has one; nil (no)
    /// for a scale, a restart or a revert (`ReleasePhase`).
    public var runsReleasePhase: Bool?
    /// Volumes mounted into its processes (`volumes:mount`); nil when none.
    public var mounts: [VolumeMount]?
    /// The add-ons its processes, one-off runs and release phase may reach (its attachments); nil when none.
    public var reaches: [ServiceAddress]?
    /// An add-on's own release: the service address its process answers at.
    public var serves: ServiceAddress?

    public init(app: String, version: Int64, image: KID, config: KID, processTypes: [String: String],
                formation: [String: ProcessFormation], healthchecks: [String: HealthCheck] = [:],
                sourceRecord: KID? = nil, build: KID? = nil, commit: String? = nil,
                description: String, createdBy: String, createdAt: Date = Date()) {
        self.app = app
        self.version = version
        self.image = image
        self.config = config
        self.processTypes = processTypes
        self.formation = formation
        self.healthchecks = healthchecks
        self.sourceRecord = sourceRecord
        self.build = build
        self.commit = commit
        self.description = description
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.links = [image, config] + [sourceRecord, build].compactMap { $0 }
    }

    /// The formation's process types that the image can run, in name order.
    public var runnableTypes: [String] { formation.keys.filter { processTypes[$0] != nil }.sorted() }

    /// The Procfile type whose command is the release phase's, not a process.
    public static let releasePhaseType = "release"

    /// Process types that run as processes: all but the release phase's `release`.
    public static func isProcessType(_ type: String) -> Bool { type != releasePhaseType }
}

/// How many processes of one type, and what each may use. Memory and CPU are
/// both the limit a process runs under and what placement reserves for it.
public struct ProcessFormation: Codable, Sendable, Equatable {
    public var quantity: Int
    public var memory: UInt64
    public var cpus: Double

    public static let defaultMemory: UInt64 = 512 << 20
    public static let defaultCPUs = 0.5
    /// More than this many of one type is a typo, not a plan.
    public static let maxQuantity = 100

    public init(quantity: Int, memory: UInt64 = defaultMemory, cpus: Double = defaultCPUs) {
        self.quantity = quantity
        self.memory = memory
        self.cpus = cpus
    }
}

/// A health check from app.json (`healthchecks.web: [{path, timeout, attempts, initialDelay}]`,
/// as Dokku reads it). Without a path, the check is that the port accepts connections.
public struct HealthCheck: Codable, Sendable, Equatable {
    /// An HTTP path that must answer 2xx or 3xx; nil: a TCP connect.
    public var path: String?
    /// Seconds per attempt.
    public var timeout: Double
    /// Seconds to wait after start before the first attempt.
    public var initialDelay: Double
    /// Failed attempts in a row after which a healthy process counts as unhealthy,
    /// and attempts a starting process gets before it counts as failed.
    public var attempts: Int

    public init(path: String? = nil, timeout: Double = 2, initialDelay: Double = 0, attempts: Int = 30) {
        self.path = path
        self.timeout = timeout
        self.initialDelay = initialDelay
        self.attempts = attempts
    }

    /// The check a web process gets when app.json names none.
    public static let portAccepts = HealthCheck()
}

/// A release as the history lists it.
public struct ReleaseEntry: Sendable, Equatable {
    public var kid: KID
    public var release: Release
    public var time: Date
    public var actor: String
    public var version: Int64 { release.version }

    public init(kid: KID, release: Release, time: Date, actor: String) {
        self.kid = kid
        self.release = release
        self.time = time
        self.actor = actor
    }
}
