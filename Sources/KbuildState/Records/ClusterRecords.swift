public import KbuildCore
public import Foundation

/// A node as its agent registered it.
public struct NodeRecord: Codable, Sendable, Equatable {
    public var kind = "kbuild.node/v1"
    public var name: String
    /// Where the router reaches this node's processes (an IP address).
    public var address: String
    public var capacity: Resources
    /// The network its processes join: "host", or a named network namespace.
    public var network: String
    public var agentPID: Int32
    public var startedAt: Date

    public init(name: String, address: String, capacity: Resources, network: String, agentPID: Int32, startedAt: Date = Date()) {
        self.name = name
        self.address = address
        self.capacity = capacity
        self.network = network
        self.agentPID = agentPID
        self.startedAt = startedAt
    }
}

extension NodeRecord {
    /// How long after its last report a node counts as lost (`kbuild up --node-lost-after`), and how long one
    /// that has not reported yet counts as alive from its registration.
    public static let defaultLease: TimeInterval = 6

    /// Alive while its report is fresh (within the shorter of its own lease and `lease`); an agent that
    /// (re)registered gets one lease from then to report.
    public func isAlive(reporting status: NodeStatus?, at now: Date, lease: TimeInterval = NodeRecord.defaultLease) -> Bool {
        if let status, now.timeIntervalSince(status.at) <= min(status.lease, lease) { return true }
        return now.timeIntervalSince(startedAt) <= lease
    }
}

/// Memory and CPU, as capacity, requests, or what is free.
public struct Resources: Codable, Sendable, Equatable {
    public var memory: UInt64
    public var cpus: Double

    public init(memory: UInt64, cpus: Double) {
        self.memory = memory
        self.cpus = cpus
    }

    public func fits(_ r: Resources) -> Bool { r.memory <= memory && r.cpus <= cpus + 1e-9 }
    public static func - (a: Resources, b: Resources) -> Resources {
        Resources(memory: a.memory >= b.memory ? a.memory - b.memory : 0, cpus: a.cpus - b.cpus)
    }
    /// Saturating: a sum of untrusted sizes never traps.
    public static func + (a: Resources, b: Resources) -> Resources {
        let (memory, overflow) = a.memory.addingReportingOverflow(b.memory)
        return Resources(memory: overflow ? .max : memory, cpus: a.cpus + b.cpus)
    }
    public var description: String { String(format: "%@ and %.2g CPU", formatMemory(memory), cpus) }
}

public func formatMemory(_ bytes: UInt64) -> String {
    bytes >= 1 << 30 && bytes % (1 << 30) == 0 ? "\(bytes >> 30)G" : "\(bytes >> 20)M"
}

/// What a process runs: two processes with the same spec are interchangeable,
/// so a release that only scales (or a revert to what runs) restarts nothing.
public struct ProcessSpec: Codable, Sendable, Equatable {
    public var app: String
    public var type: String
    public var image: KID
    public var config: KID
    public var command: String
    public var memory: UInt64
    public var cpus: Double
    public var health: HealthCheck?
    /// Bumped by `ps:restart`.
    public var generation: Int
    /// The volumes it mounts (all on one node: the only node it may run on); nil when none.
    public var mounts: [VolumeMount]?
    /// The add-ons it may reach, and, for an add-on, where it answers (`Release`).
    public var reaches: [ServiceAddress]?
    public var serves: ServiceAddress?

    public init(app: String, type: String, image: KID, config: KID, command: String, memory: UInt64, cpus: Double, health: HealthCheck?, generation: Int,
                mounts: [VolumeMount]? = nil, reaches: [ServiceAddress]? = nil, serves: ServiceAddress? = nil) {
        self.app = app
        self.type = type
        self.image = image
        self.config = config
        self.command = command
        self.memory = memory
        self.cpus = cpus
        self.health = health
        self.generation = generation
        self.mounts = mounts.flatMap { $0.isEmpty ? nil : $0 }
        self.reaches = reaches.flatMap { $0.isEmpty ? nil : $0 }
        self.serves = serves
    }

    /// The spec of each process type a release runs.
    public static func of(_ release: Release, type: String, generation: Int) -> ProcessSpec? {
        guard let command = release.processTypes[type], let f = release.formation[type] else { return nil }
        let health = release.healthchecks[type] ?? (type == "web" ? HealthCheck.portAccepts : nil)
        // Only the mounts of this type, each without its type list: mounting a volume into `worker` restarts no web process.
        let mounts = (release.mounts ?? []).filter { $0.applies(to: type) }.map { VolumeMount(volume: $0.volume, id: $0.id, node: $0.node, path: $0.path) }
        return ProcessSpec(app: release.app, type: type, image: release.image, config: release.config, command: command,
                           memory: f.memory, cpus: f.cpus, health: health, generation: generation, mounts: mounts,
                           reaches: release.reaches, serves: release.serves)
    }

    /// The node its volumes are on, where alone it may run (nil: anywhere).
    public var pinnedNode: String? { mounts?.first?.node }

    public var key: KID { KID(hashing: (try? Records.encoder().encode(self)) ?? Data()) }
    public var resources: Resources { Resources(memory: memory, cpus: cpus) }
}

/// One process a node should run.
public struct AssignedProcess: Codable, Sendable, Equatable {
    /// Unique among every node's: `APP.TYPE.N-SPEC8`, also a file name.
    public var id: String
    public var index: Int
    public var spec: ProcessSpec
    /// The release it was placed for (a later release that only scales keeps it).
    public var release: KID
    public var version: Int64
    public var assignedAt: Date

    public init(index: Int, spec: ProcessSpec, release: KID, version: Int64, assignedAt: Date) {
        self.id = "\(spec.app).\(spec.type).\(index)-\(spec.key.hex.prefix(8))"
        self.index = index
        self.spec = spec
        self.release = release
        self.version = version
        self.assignedAt = assignedAt
    }

    /// `web.1`, as users name it.
    public var name: String { "\(spec.type).\(index)" }
}

/// What the scheduler wants a node to run.
public struct Assignment: Codable, Sendable, Equatable {
    public var kind = "kbuild.assignment/v1"
    public var node: String
    public var processes: [AssignedProcess]
    /// Release phases to run once each (`ReleasePhase`); nil when there are none.
    public var tasks: [ReleaseTask]?
    /// The volumes this node keeps; nil when none.
    public var volumes: [AssignedVolume]?
    /// The term of the scheduler that wrote it (`LeaderTerm.fence`); nil from one without an election.
    /// A node acts on no assignment of an older term than one it has acted on.
    public var fence: Int64?

    public init(node: String, processes: [AssignedProcess], tasks: [ReleaseTask] = [], volumes: [AssignedVolume] = [], fence: Int64? = nil) {
        self.node = node
        self.fence = fence
        self.processes = processes.sorted { $0.id < $1.id }
        self.tasks = tasks.isEmpty ? nil : tasks.sorted { $0.id < $1.id }
        self.volumes = volumes.isEmpty ? nil : volumes.sorted { $0.id < $1.id }
    }
}

/// A process's lifecycle on its node.
public enum ProcessState: String, Codable, Sendable {
    /// Started; health not yet shown.
    case starting
    /// Passing its health check (or, without one, up for a second).
    case healthy
    /// Running, but failing its health check.
    case unhealthy
    /// Exited; waiting out its backoff before the next start.
    case backoff
    /// Taken out of routing, being stopped.
    case stopping
}

/// What a node's agent reports about one process.
public struct ProcessStatus: Codable, Sendable, Equatable {
    public var id: String
    public var app: String
    public var type: String
    public var name: String
    public var state: ProcessState
    /// The process record (host PID, node, release, spec), for trace.
    public var process: KID?
    public var hostPID: Int32?
    public var port: Int?
    /// Where the router reaches it, when not at its node's address (a network namespace of its own).
    public var address: String?
    /// Starts after the first, since this process was assigned.
    public var restarts: Int
    public var lastExit: Int32?
    public var since: Date

    public init(id: String, app: String, type: String, name: String, state: ProcessState, process: KID?, hostPID: Int32?,
                port: Int?, address: String? = nil, restarts: Int, lastExit: Int32?, since: Date) {
        self.id = id
        self.app = app
        self.type = type
        self.name = name
        self.state = state
        self.process = process
        self.hostPID = hostPID
        self.port = port
        self.address = address
        self.restarts = restarts
        self.lastExit = lastExit
        self.since = since
    }
}

/// A node's report: its heartbeat too. The node counts as alive until `at + lease`.
public struct NodeStatus: Codable, Sendable, Equatable {
    public var kind = "kbuild.node-status/v1"
    public var node: String
    public var at: Date
    public var lease: Double
    public var processes: [ProcessStatus]
    /// The volumes it keeps (nil: none).
    public var volumes: [VolumeStatus]?
    /// Bytes free where its volumes are (nil: an agent that keeps none).
    public var volumeSpace: UInt64?

    public init(node: String, at: Date, lease: Double, processes: [ProcessStatus], volumes: [VolumeStatus] = [], volumeSpace: UInt64? = nil) {
        self.node = node
        self.at = at
        self.lease = lease
        self.processes = processes.sorted { $0.id < $1.id }
        self.volumes = volumes.isEmpty ? nil : volumes.sorted { $0.id < $1.id }
        self.volumeSpace = volumeSpace
    }

    public func isAlive(at now: Date) -> Bool { now.timeIntervalSince(at) <= lease }
}

/// Which process of which release ran where: the process KID's record.
public struct ProcessRecord: Codable, Sendable, Equatable {
    public var kind = "kbuild.process/v1"
    public var id: String
    public var node: String
    public var hostPID: Int32
    public var app: String
    public var name: String
    public var release: KID
    public var version: Int64
    public var spec: ProcessSpec
    public var port: Int
    public var startedAt: Date
    public var links: [KID]

    public init(id: String, node: String, hostPID: Int32, app: String, name: String, release: KID, version: Int64, spec: ProcessSpec, port: Int, startedAt: Date) {
        self.id = id
        self.node = node
        self.hostPID = hostPID
        self.app = app
        self.name = name
        self.release = release
        self.version = version
        self.spec = spec
        self.port = port
        self.startedAt = startedAt
        self.links = [release, spec.image, spec.config]
    }
}

/// How a release's rollout went, as the scheduler saw it.
public struct RolloutRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Every process of the release is healthy and nothing older runs.
        case converged
        /// It failed its health checks or crash-looped and was reverted (see `revertedBy`).
        case reverted
        /// It failed and there was no healthy release to go back to.
        case failed
        /// A process could not be placed; what runs keeps running.
        case unschedulable
    }
    public var kind = "kbuild.rollout/v1"
    public var app: String
    public var release: KID
    public var version: Int64
    public var state: State
    public var reason: String?
    /// For a revert: the release that went back.
    public var revertedBy: Int64?
    public var at: Date

    public init(app: String, release: KID, version: Int64, state: State, reason: String? = nil, revertedBy: Int64? = nil, at: Date = Date()) {
        self.app = app
        self.release = release
        self.version = version
        self.state = state
        self.reason = reason
        self.revertedBy = revertedBy
        self.at = at
    }
}

/// Process type → generation: `ps:restart` bumps one, and the scheduler rolls that type's processes.
public struct RestartGenerations: Codable, Sendable, Equatable {
    public var kind = "kbuild.restarts/v1"
    public var generations: [String: Int]
    public init(_ generations: [String: Int]) { self.generations = generations }
}

/// The custom domains of an app (`domains:add`), at `apps/APP/domains`.
/// How the router treats one app's requests (`kbuild router:settings APP`); nil is the router's default.
public struct RouterSettings: Codable, Sendable, Equatable {
    public var kind = "kbuild.router-settings/v1"
    /// Seconds the app may take to send its response head before the router answers 504 (H12): 1 to 3600.
    public var requestTimeout: Int?
    /// The largest request body in bytes (413 past it): 1 KiB to 10 GiB.
    public var bodyLimit: Int?
    /// Plain HTTP requests are answered 308 to the same URL on the router's HTTPS port.
    public var redirectHTTPS: Bool?

    public init(requestTimeout: Int? = nil, bodyLimit: Int? = nil, redirectHTTPS: Bool? = nil) {
        self.requestTimeout = requestTimeout
        self.bodyLimit = bodyLimit
        self.redirectHTTPS = redirectHTTPS
    }

    public static let timeoutRange = 1...3600
    public static let bodyLimitRange = 1024...(10 << 30)

    public func check() throws {
        if let requestTimeout, !Self.timeoutRange.contains(requestTimeout) {
            throw KbuildError(.invalidArgument, "invalid request timeout \(requestTimeout): 1 to 3600 seconds")
        }
        if let bodyLimit, !Self.bodyLimitRange.contains(bodyLimit) {
            throw KbuildError(.invalidArgument, "invalid body limit \(bodyLimit): 1K to 10G")
        }
    }
}

public struct DomainsRecord: Codable, Sendable, Equatable {
    public var kind = "kbuild.domains/v1"
    public var domains: [String]
    public init(_ domains: [String]) { self.domains = domains.sorted() }

    /// A host name: dot-separated DNS labels, at most 253 bytes, lowercase.
    public static func check(_ domain: String) throws {
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        let ok = domain.utf8.count <= 253 && labels.count >= 2 && labels.allSatisfy { l in
            (1...63).contains(l.utf8.count) && l.first != "-" && l.last != "-" &&
                l.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d }
        }
        guard ok else {
            throw KbuildError(.invalidArgument, "invalid domain \(domain.debugQuoted): want a lowercase host name such as www.example.com")
        }
        // An IP literal is every app's address, not one app's name: requests by IP
        // are not any tenant's to take. (The last label of a host name is never all digits.)
        if let last = labels.last, last.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            throw KbuildError(.invalidArgument, "invalid domain \(domain.debugQuoted): an IP address cannot be an app's domain")
        }
    }
}

/// A node the admin took out of placement (`nodes:drain`): nothing new goes
/// there, and what runs there moves elsewhere as a rollout does (a new
/// process healthy first, then the old one stopped).
public struct DrainRecord: Codable, Sendable, Equatable {
    public var kind = "kbuild.drain/v1"
    public var node: String
    public var by: String
    public var at: Date

    public init(node: String, by: String, at: Date = Date()) {
        self.node = node
        self.by = by
        self.at = at
    }
}
