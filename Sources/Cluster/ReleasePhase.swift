public import KbuildCore
public import Releases
public import Foundation

/// Heroku's release phase (Dokku's predeploy): a Procfile's `release:`
/// command runs once for each new release made by a deploy, a config change
/// or a rollback (not a scale or a revert), in that release's image with its
/// config and network, before any of its processes start. The scheduler
/// places it on a node as a `ReleaseTask` of the node's assignment, the node
/// agent runs it and writes a `ReleasePhaseRecord` (ref
/// `apps/APP/release-phase`, whose history keeps every run's output); only
/// after it succeeded does the release roll out. A failure (or running past
/// its timeout) reverts the app to the release that ran before, so nothing
/// that runs changes.
public enum ReleasePhase {
    /// The Procfile's process type that names the command.
    public static let processType = Release.releasePhaseType
    /// Config var: seconds the command may run (default 900).
    public static let timeoutVar = "RELEASE_PHASE_TIMEOUT"
    public static let defaultTimeout: TimeInterval = 900
    /// Output kept of one run (the rest is counted in a last line).
    public static let outputCap = 16 << 20


    /// The command `release` runs in its release phase, or nil when it has none to run.
    public static func command(of release: Release) -> String? {
        guard release.runsReleasePhase == true else { return nil }
        return release.processTypes[processType]
    }

    /// The timeout a config var asks for (bounded to 1 s … 24 h), else the default.
    public static func timeout(_ config: [String: String]) -> TimeInterval {
        guard let text = config[timeoutVar], let seconds = Double(text), seconds.isFinite else { return defaultTimeout }
        return min(max(seconds, 1), 86_400)
    }
}

/// One release phase to run on a node: part of its `Assignment`.
public struct ReleaseTask: Codable, Sendable, Equatable {
    public var app: String
    public var release: KID
    public var version: Int64
    public var image: KID
    public var config: KID
    public var command: String
    public var memory: UInt64
    public var cpus: Double
    public var assignedAt: Date

    public init(app: String, release: KID, version: Int64, image: KID, config: KID, command: String, memory: UInt64, cpus: Double, assignedAt: Date) {
        self.app = app
        self.release = release
        self.version = version
        self.image = image
        self.config = config
        self.command = command
        self.memory = memory
        self.cpus = cpus
        self.assignedAt = assignedAt
    }

    /// `APP.release.vN`, also the name of its log file.
    public var id: String { "\(app).release.v\(version)" }
}

/// How one release phase went (ref `apps/APP/release-phase`).
public struct ReleasePhaseRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable { case running, succeeded, failed }

    public var kind = "kbuild.release-phase/v1"
    public var app: String
    public var release: KID
    public var version: Int64
    public var command: String
    public var state: State
    public var node: String
    /// While it runs: the node's log file of its output (the pusher's hook follows it).
    public var liveLog: String?
    /// When it ended: its output (a blob) and exit status, or why it failed.
    public var output: KID?
    public var exitStatus: Int32?
    public var reason: String?
    public var startedAt: Date
    public var finishedAt: Date?
    public var links: [KID]

    public init(app: String, release: KID, version: Int64, command: String, state: State, node: String, liveLog: String? = nil,
                output: KID? = nil, exitStatus: Int32? = nil, reason: String? = nil, startedAt: Date, finishedAt: Date? = nil) {
        self.app = app
        self.release = release
        self.version = version
        self.command = command
        self.state = state
        self.node = node
        self.liveLog = liveLog
        self.output = output
        self.exitStatus = exitStatus
        self.reason = reason
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.links = [release] + [output].compactMap { $0 }
    }
}
