public import KbuildCore
public import Foundation

/// The JSON the API speaks (`/api/v1/…`), shared by the server and the CLI.
public enum API {
    public static let prefix = "/api/v1"
    /// Largest JSON body the API reads (a bigger one gets 413).
    public static let maxBody = 1 << 20

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

        public init(_ entry: ReleaseEntry, status: String) {
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
        public var processes: [ProcessInfo]

        public init(name: String, stack: String, deployBranch: String, createdBy: String, createdAt: Date, release: ReleaseInfo?,
                    rollout: RolloutRecord?, domains: [String], processes: [ProcessInfo]) {
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
        /// Filled in by the server: what the app uses now.
        public var used: Usage?

        public struct Usage: Codable, Sendable, Equatable {
            public var kegBytes: UInt64
            public var memory: UInt64
            public var cpus: Double
            public var builds: Int
            public init(kegBytes: UInt64, memory: UInt64, cpus: Double, builds: Int) {
                self.kegBytes = kegBytes
                self.memory = memory
                self.cpus = cpus
                self.builds = builds
            }
        }

        public init(kegBytes: UInt64? = nil, memory: UInt64? = nil, cpus: Double? = nil, builds: Int? = nil, used: Usage? = nil) {
            self.kegBytes = kegBytes
            self.memory = memory
            self.cpus = cpus
            self.builds = builds
            self.used = used
        }
    }

    public struct Run: Codable, Sendable {
        public var command: [String]
        public init(command: [String]) { self.command = command }
    }

    public struct Domain: Codable, Sendable {
        public var domain: String
        public init(domain: String) { self.domain = domain }
    }

    public struct NodeInfo: Codable, Sendable {
        public var record: NodeRecord
        public var alive: Bool
        public var processes: Int
        public var heartbeat: Date?

        public init(record: NodeRecord, alive: Bool, processes: Int, heartbeat: Date?) {
            self.record = record
            self.alive = alive
            self.processes = processes
            self.heartbeat = heartbeat
        }
    }
}
