import Cluster
import KbuildCore
public import Keg
import KegRemote
public import KbuildState
public import Sandbox
public import ServiceLifecycle
import Releases
public import Foundation
import Synchronization

/// What a node agent needs to know about its node.
public struct NodeAgentConfig: Sendable {
    public var name: String
    /// Where the router reaches this node's processes.
    public var address: String
    /// The network the processes join: the host's, or the node's own namespace.
    public var network: SandboxNetwork
    /// Each process in a network namespace of its own with NAT egress only
    /// (`EgressNetwork`), its outer end in `network`. Nil: processes share
    /// `network` (for tests of the agent alone).
    public var egress: EgressNetwork?
    public var capacity: Resources
    /// The agent's state: process files and logs.
    public var stateDir: String
    /// How often the node reports while nothing changes (its heartbeat), and how long after its last
    /// report it counts as lost (the scheduler uses the shorter of this and its own `--node-lost-after`).
    public var heartbeat: Duration = .seconds(1)
    public var lease: TimeInterval = 6
    /// How long a process is out of routing before it gets SIGTERM.
    public var drain: Duration = .seconds(1)
    /// How long after SIGTERM before SIGKILL.
    public var stopGrace: Duration = .seconds(10)
    public var maxBackoff: Duration = .seconds(60)
    public var ports: ClosedRange<Int> = 20000...29999
    /// Log bytes kept per process: its sandbox's helper drops the oldest half
    /// of the file past this, as it writes (and says so in the log).
    public var logCapPerProcess: UInt64 = 64 << 20
    /// Log bytes kept per app on this node: past this, the oldest output goes
    /// first (the logs of processes that stopped longest ago), so what is
    /// kept is always the newest lines.
    public var logCapPerApp: UInt64 = 256 << 20

    public init(name: String, address: String = "127.0.0.1", network: SandboxNetwork = .host, capacity: Resources = NodeAgentConfig.hostCapacity(), stateDir: String) {
        self.name = name
        self.address = address
        self.network = network
        self.capacity = capacity
        self.stateDir = stateDir
    }

    /// This machine's memory and cores.
    public static func hostCapacity() -> Resources {
        Resources(memory: ProcessInfo.processInfo.physicalMemory, cpus: Double(ProcessInfo.processInfo.activeProcessorCount))
    }
}

/// The node agent: converges its node to the assignment the scheduler wrote.
/// It starts each assigned process in the Sandbox (image layers as lower
/// dirs, $PORT, limits, the trace environment), health-checks it, restarts it
/// with exponential backoff when it exits, and stops what is no longer
/// assigned (out of routing first, then SIGTERM, then SIGKILL). Its report
/// (`nodes/NAME/status`) is also its heartbeat.
///
/// Processes outlive the agent: each sandbox is watched by its own helper,
/// and the agent writes down each one it starts; a new agent adopts them.
/// So stopping the agent (or `kbuild up`) stops no app process.
public struct NodeAgent: Service {
    public let config: NodeAgentConfig
    /// Seconds added to the times this node's reports carry (`KBUILD_CLOCK_SKEW`): a machine whose clock is off,
    /// for the test that the scheduler does not go by it. Zero otherwise.
    static let clockSkew: TimeInterval = ProcessInfo.processInfo.environment["KBUILD_CLOCK_SKEW"].flatMap(TimeInterval.init) ?? 0
    /// Where images and their layers are (a node of its own has its own, filled from `remote`).
    let keg: Keg
    /// Where the cluster's records are (releases, assignments; the node's reports go there).
    let records: any RecordContent
    let refs: any RefStore
    let sandbox: Sandbox
    /// Where the images' objects this Keg lacks come from: the control plane (a node that is a host of its
    /// own), or the other control planes (the node of a control plane sharing its state on etcd).
    let remote: (any KegUpstream)?
    /// Where the processes' logs go too, on a node that joined over the network.
    let logSink: (any LogSink)?
    let log: @Sendable (String) -> Void

    /// `records`: the control plane's records (its API, for a node that joined over the network) when the node keeps images in a Keg of its own (default: `keg`).
    public init(config: NodeAgentConfig, keg: Keg, records: (any RecordContent)? = nil, refs: any RefStore, sandbox: Sandbox, remote: (any KegUpstream)? = nil,
                logSink: (any LogSink)? = nil, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.logSink = logSink
        self.config = config
        self.keg = keg
        self.records = records ?? keg
        self.refs = refs
        self.sandbox = sandbox
        self.remote = remote
        self.log = log
    }

    public func run() async throws {
        for dir in [config.stateDir, ProcessFile.directory(config.stateDir), config.stateDir + "/logs"] {
            if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw KbuildError.syscall("mkdir", dir, verb: "start node agent \(config.name)") }
        }
        let loop = AgentLoop(agent: self)
        do {
            try await cancelWhenGracefulShutdown {
                // The control plane may not answer yet (it starts beside this agent, or is away): try again each second.
                var failures = 0
                while true {
                    do {
                        try await loop.register()
                        break
                    } catch let error where !(error is CancellationError) {
                        if failures == 0 { log("agent \(config.name): failed to register, trying again each second: \(error)") }
                        failures += 1
                        try await Task.sleep(for: .seconds(1))
                    }
                }
                await loop.adopt()
                try await loop.setUpNetworks()
                try await withThrowingDiscardingTaskGroup { group in
                    if let logSink {
                        let shipper = LogShipper(node: config.name, directory: config.stateDir + "/logs", sink: logSink, log: log)
                        group.addTask { await shipper.run() }
                    }
                    try await loop.run()
                }
            }
        } catch is CancellationError {
            // Shutting down (even while starting): the processes run on, for the next agent to adopt.
        }
    }

    /// Stops every process an agent with this state dir started (`kbuild down`):
    /// SIGTERM, then SIGKILL after `grace`. Returns how many there were.
    public static func stopAll(stateDir: String, grace: Duration = .seconds(10)) async -> Int {
        let files = ProcessFile.readAll(stateDir) { _ in }
        let processes = files.compactMap { f in
            SandboxProcess.adopt(helperPID: f.helperPID, pid: f.pid, startTime: f.startTime, cgroupDirectories: f.cgroupDirectories)
        }
        for p in processes { p.signal(SIGTERM) }
        let deadline = ContinuousClock.now + grace
        for p in processes {
            while p.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
            if p.isRunning { p.kill() }
            _ = await p.wait()
        }
        for f in files { ProcessFile.remove(stateDir, id: f.assigned.id) }
        // Volumes are unmounted (their data stays; the next agent mounts them again).
        for disk in VolumeDisk.all(in: stateDir + "/volumes") { await disk.unmount() }
        return processes.count
    }
}

/// One process the agent looks after: running, waiting to restart, or stopping.
struct Entry {
    var assigned: AssignedProcess
    var process: SandboxProcess?
    /// Its network namespace, when processes get one each.
    var link: EgressNetwork.Link?
    var state: ProcessState
    var port: Int
    var record: KID?
    var restarts: Int
    var lastExit: Int32?
    var since: Date
    var startedAt: ContinuousClock.Instant
    var nextStart: ContinuousClock.Instant?
    var nextCheck: ContinuousClock.Instant
    var failures = 0
    var healthySince: ContinuousClock.Instant?
    /// Whether its CPU limit is on (a process boots without it: `bootBurst`).
    var throttled = false
    /// Taken over from an earlier agent: already ready, so checked by connect
    /// (not by a GET /) and held to its limit at once.
    var adopted = false
    var throttleFailed = false
    var termAt: ContinuousClock.Instant?
    var killAt: ContinuousClock.Instant?
}

/// The agent's state and its loop.
actor AgentLoop {
    let agent: NodeAgent
    let reader: ClusterReader
    var table: [String: Entry] = [:]
    var lastReport: [ProcessStatus]?
    var lastVolumes: [String: VolumeStatus] = [:]
    var lastBeat = ContinuousClock.now - .seconds(3600)
    /// A report is being written.
    var reporting = false
    var lastLogSweep = ContinuousClock.now - .seconds(3600)
    /// Release phases this agent started, by release (each runs once).
    var releasePhasesStarted: Set<KID> = []
    /// The assigned volumes as this node has them (`convergeVolumes`).
    var volumes: [String: VolumeStatus] = [:]
    /// When each failed volume was last tried.
    var volumeTried: [String: ContinuousClock.Instant] = [:]
    nonisolated var config: NodeAgentConfig { agent.config }
    var stateDir: String { config.stateDir }

    init(agent: NodeAgent) {
        self.agent = agent
        self.reader = ClusterReader(records: agent.records, refs: agent.refs)
    }

    func register() async throws {
        let record = NodeRecord(name: config.name, address: config.address, capacity: config.capacity,
                                network: config.network == .host ? "host" : "\(config.network)", agentPID: getpid(), startedAt: Date() + NodeAgent.clockSkew)
        try await agent.refs.set(try Schema.node(config.name), to: try Records.put(record, in: agent.records), actor: "agent \(config.name)")
    }

    /// Finds the processes an earlier agent started; they are health-checked afresh.
    func adopt() {
        for file in ProcessFile.readAll(stateDir, log: agent.log) {
            guard let process = SandboxProcess.adopt(helperPID: file.helperPID, pid: file.pid, startTime: file.startTime,
                                                     cgroupDirectories: file.cgroupDirectories) else {
                ProcessFile.remove(stateDir, id: file.assigned.id)
                continue
            }
            table[file.assigned.id] = Entry(assigned: file.assigned, process: process, link: file.link, state: .starting, port: file.port,
                                            record: file.process, restarts: file.restarts, lastExit: nil, since: file.startedAt, startedAt: .now,
                                            nextCheck: .now, adopted: true)
            agent.log("agent \(config.name): adopted \(file.assigned.id) (pid \(file.pid))")
        }
    }

    /// The firewall of the processes' networks, and the namespaces a killed
    /// agent left behind (those of adopted processes stay).
    func setUpNetworks() async throws {
        guard let egress = config.egress else { return }
        try await egress.installFirewall()
        let keep = Set(table.values.compactMap(\.link?.namespace))
        let swept = await egress.sweep(keep: keep)
        if swept > 0 { agent.log("agent \(config.name): removed \(swept) network namespaces of processes that are gone") }
    }

    /// Where the router and health checks reach a process: its own address,
    /// or, on a node of its own, the node's (its port is published there).
    nonisolated func address(of link: EgressNetwork.Link?) -> String {
        guard let link, let egress = config.egress, egress.publishOn == nil else { return config.address }
        return link.inside
    }

    /// A process that ended: its record, and its network.
    func forget(_ e: Entry) async {
        ProcessFile.remove(stateDir, id: e.assigned.id)
        if let link = e.link, let egress = config.egress {
            if let s = e.assigned.spec.serves { await egress.unserve(s, at: link, port: e.port) }
            await egress.remove(link, port: e.assigned.spec.serves == nil ? e.port : nil)
        }
    }

    func reconcile(_ assigned: [AssignedProcess]) async {
        let now = ContinuousClock.now
        let wanted = Set(assigned.map(\.id))
        for (id, var e) in table {
            if !wanted.contains(id) {
                guard let process = e.process else {
                    table[id] = nil
                    continue
                }
                if e.state != .stopping {
                    // Out of routing now (the report says stopping), SIGTERM once the router has let go.
                    e.state = .stopping
                    e.termAt = now + config.drain
                }
                if !process.isRunning {
                    _ = await process.wait()
                    await forget(e)
                    table[id] = nil
                    continue
                }
                if let termAt = e.termAt, now >= termAt {
                    process.signal(SIGTERM)
                    e.termAt = nil
                    e.killAt = now + config.stopGrace
                } else if let killAt = e.killAt, now >= killAt {
                    process.kill()
                    e.killAt = nil
                }
                table[id] = e
                continue
            }
            if let process = e.process, !process.isRunning {
                let status = await process.wait()
                await forget(e)
                e.link = nil
                e.process = nil
                e.restarts += 1
                e.lastExit = status
                e.state = .backoff
                e.since = Date()
                let delay = backoff(e.restarts)
                e.nextStart = now + delay
                appendLog(e.assigned.id, "\(e.assigned.name) exited\(status.map { " with status \($0)" } ?? ""); starting again in \(delay)")
                agent.log("agent \(config.name): \(id) exited (\(status.map(String.init) ?? "?")), restart \(e.restarts) in \(delay)")
                table[id] = e
            }
        }
        for p in assigned {
            if let e = table[p.id] {
                guard e.process == nil, e.state == .backoff, let next = e.nextStart, now >= next else { continue }
                await start(p, restarts: e.restarts, lastExit: e.lastExit)
            } else {
                await start(p, restarts: 0, lastExit: nil)
            }
        }
    }

    func backoff(_ restarts: Int) -> Duration {
        let seconds = min(Double(config.maxBackoff.components.seconds), pow(2, Double(max(0, restarts - 1))))
        return .milliseconds(Int(seconds * 1000))
    }

    func start(_ p: AssignedProcess, restarts: Int, lastExit: Int32?) async {
        let now = ContinuousClock.now
        let port = allocatePort()
        var entry = Entry(assigned: p, process: nil, state: .starting, port: port, record: nil, restarts: restarts, lastExit: lastExit,
                          since: Date(), startedAt: now, nextCheck: now)
        do {
            let launch = try await ProcessLaunch.prepare(release: p.release, image: p.spec.image, config: p.spec.config, app: p.spec.app,
                                                         name: p.name, id: p.id, port: port, reader: reader, images: agent.keg, remote: agent.remote)
            var network = config.network
            var mounts = try volumeMounts(p.spec)
            if p.spec.serves != nil && config.egress == nil {
                throw KbuildError(.unsatisfiable, "an add-on runs only on a node whose processes have networks of their own (--isolation egress): on this one anything could reach it")
            }
            if let egress = config.egress {
                // An add-on's port is never published at the node's address: only its service address reaches it, from its grants.
                let link = try await egress.make(port: p.spec.serves == nil ? port : nil)
                entry.link = link
                network = .namespace("/run/netns/" + link.namespace)
                // DNS through the host's resolvers.
                mounts += EgressNetwork.hostFiles()
                // Its app's add-ons; an add-on's own service address, to this process's port.
                try await egress.grant(link, p.spec.reaches ?? [])
                if let s = p.spec.serves { try await egress.serve(s, at: link, port: port) }
            }
            let release = launch.release
            let log = open(logPath(p.id), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
            guard log >= 0 else { throw KbuildError.syscall("open", logPath(p.id), verb: "start \(p.id)") }
            // The sandbox gets its own copy of the log's descriptor.
            defer { close(log) }
            let spec = SandboxSpec(command: AppCommand.shell(p.spec.command), lowerDirs: launch.lowerDirs, environment: launch.environment,
                                   workingDirectory: launch.workingDirectory, hostname: p.name, mounts: mounts, network: network,
                                   // Every core to boot on (a CPU cgroup all the same); its own limit comes on when it
                                   // is healthy or after the boot burst (`throttleBooted`).
                                   limits: SandboxLimits(memory: p.spec.memory, pids: 4096, cpus: Double(ProcessInfo.processInfo.activeProcessorCount)),
                                   stdout: .lines(log, cap: config.logCapPerProcess), stderr: .discard, dieWithCaller: false)
            let process = try await agent.sandbox.start(spec)
            let record = ProcessRecord(id: p.id, node: config.name, hostPID: process.pid, app: p.spec.app, name: p.name,
                                       release: p.release, version: release.version, spec: p.spec, port: port, startedAt: Date())
            // Written down here first (the record's KID is its hash): a process that started is never left untracked,
            // whatever the store answers next.
            let bytes = try Records.encode(record)
            let kid = KID(hashing: bytes)
            try ProcessFile(assigned: p, helperPID: process.helperPID, pid: process.pid, startTime: process.startTime,
                            cgroupDirectories: process.cgroupDirectories, port: port, process: kid, startedAt: record.startedAt,
                            restarts: restarts, log: logPath(p.id), link: entry.link).write(to: stateDir)
            do {
                _ = try await agent.records.putRecordBytes(bytes)
                // The app's process list, for trace: its history has every process ever started.
                try await agent.refs.set(try Schema.processes(p.spec.app), to: kid, actor: "agent \(config.name)")
            } catch {
                agent.log("agent \(config.name): \(p.id) runs, but its record did not reach the store (trace will not list it): \(error)")
            }
            entry.process = process
            entry.record = kid
            if let h = p.spec.health { entry.nextCheck = now + .milliseconds(Int(h.initialDelay * 1000)) }
            agent.log("agent \(config.name): started \(p.id) pid \(process.pid) port \(port)")
        } catch {
            // A start that fails counts as a crash: backoff, and the scheduler sees the restarts.
            appendLog(p.id, "failed to start \(p.name): \(error)")
            if let link = entry.link, let egress = config.egress {
                if let s = p.spec.serves { await egress.unserve(s, at: link, port: port) }
                await egress.remove(link, port: p.spec.serves == nil ? port : nil)
            }
            entry.link = nil
            agent.log("agent \(config.name): failed to start \(p.id): \(error)")
            entry.state = .backoff
            entry.restarts = restarts + 1
            entry.lastExit = 127
            entry.nextStart = now + backoff(entry.restarts)
        }
        table[p.id] = entry
    }

    func logPath(_ id: String) -> String { stateDir + "/logs/\(id).log" }

    /// kbuild's own note in a process's log, in the helper's line format (tag `k`).
    func appendLog(_ id: String, _ line: String) {
        let fd = open(logPath(id), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        let text = Array((LogLine.format(Date(), tag: "k", line) + "\n").utf8)
        _ = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// A port no process of this node has, and (on the host's network) nothing else listens on.
    func allocatePort() -> Int {
        let used = Set(table.values.map(\.port))
        for _ in 0..<1000 {
            let port = Int.random(in: config.ports)
            if used.contains(port) { continue }
            if config.network == .host && !PortCheck.isFree(port) { continue }
            return port
        }
        return config.ports.lowerBound
    }

    func report() async throws {
        // One report at a time (the heartbeat task and the loop both report): a snapshot taken earlier never lands
        // after a later one.
        while reporting { try await Task.sleep(for: .milliseconds(5)) }
        reporting = true
        defer { reporting = false }
        let processes = table.values.map { e in
            ProcessStatus(id: e.assigned.id, app: e.assigned.spec.app, type: e.assigned.spec.type, name: e.assigned.name, state: e.state,
                          process: e.record, hostPID: e.process?.pid, port: e.port, address: e.link.map { address(of: $0) },
                          restarts: e.restarts, lastExit: e.lastExit, since: e.since + NodeAgent.clockSkew)
        }.sorted { $0.id < $1.id }
        guard processes != lastReport || volumes != lastVolumes || ContinuousClock.now - lastBeat >= config.heartbeat else { return }
        let status = NodeStatus(node: config.name, at: Date() + NodeAgent.clockSkew, lease: config.lease, processes: processes,
                                volumes: Array(volumes.values), volumeSpace: VolumeDisk.space(in: volumeDirectory))
        try await agent.refs.set(try Schema.status(config.name), to: try Records.put(status, in: agent.records), actor: "agent \(config.name)")
        lastReport = processes
        lastVolumes = volumes
        lastBeat = .now
    }
}

enum PortCheck {
    /// Whether a TCP port on the host can be bound now.
    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = INADDR_ANY
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }
}
