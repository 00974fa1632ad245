public import KbuildCore
public import Foundation

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
