public import Builds
public import Cluster
import KbuildAPI
import Dashboard
import Synchronization
public import KbuildCore
public import KbuildServer
public import Keg
import KegRemote
public import Logging
public import NodeAgent
public import KbuildState
import SQLiteState
public import Router
public import Sandbox
public import Scheduler
public import ServiceLifecycle
public import Foundation
import GitGateway

/// kbuild as a library of parts that start: each `start…` function takes
/// its dependencies as arguments, adds its service to the system and returns
/// a handle; `run()` runs them all under one ServiceGroup that shuts down
/// gracefully on SIGINT and SIGTERM. `kbuild up` is one such program
/// (everything on one machine); examples/one-machine is another.
///
///     var system = KbuildSystem(logger: logger)
///     let keg = try Keg(dataDir: dir)
///     let refs = try SQLiteRefStore(path: dir.refStore.path)
///     let server = try system.startServer(keg: keg, refs: refs, dataDir: dir, host: "127.0.0.1", port: 7070)
///     try system.startScheduler(keg: keg, refs: refs)
///     try system.startNodeAgent(NodeAgentConfig(name: "n1", stateDir: …), keg: keg, refs: refs)
///     system.startRouter(keg: keg, refs: refs, host: "127.0.0.1", port: 8080)
///     try await system.run()
public struct KbuildSystem {
    public let logger: Logger
    /// Where a supervised part's failures and restarts are reported (besides the logger).
    public let report: (@Sendable (String) -> Void)?
    var services: [ServiceGroupConfiguration.ServiceConfiguration] = []

    public init(logger: Logger, report: (@Sendable (String) -> Void)? = nil) {
        self.logger = logger
        self.report = report
    }

    /// Adds a service of the caller's own; its failure stops the system.
    public mutating func add(_ service: some Service) { services.append(.init(service: service)) }

    /// Adds a service under supervision (`Supervised`): its failure is
    /// reported and it is restarted with backoff while the others serve.
    public mutating func addSupervised(_ name: String, _ service: some Service) {
        services.append(.init(service: Supervised(name, service, logger: logger, report: report), serviceName: name))
    }

    /// Runs every started part until SIGINT/SIGTERM (or an unsupervised one fails).
    public func run() async throws {
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// The HTTP server: the Keg's objects, the registry, git over smart HTTP, the API.
    /// Its git hooks point at `kbuild`; `onRunning` gets the base URL once bound.
    @discardableResult
    /// With `tls`, the same routes are served over HTTPS too, for other machines.
    public mutating func startServer(keg: Keg, refs: any RefStore, dataDir: DataDir, kbuild: String, host: String, port: Int,
                                     sandbox: Sandbox?, tls: KbuildHTTP.TLSListener? = nil, replicas: (any KegUpstream)? = nil,
                                     routerMetrics: RouterMetrics? = nil, onRunning: @escaping @Sendable (String) async -> Void = { _ in }) async throws -> ServerHandle {
        try await AppStore(keg: keg, refs: refs).installHooks(kbuild: kbuild)
        let spool = dataDir.root.path + "/git-spool"
        if mkdir(spool, 0o700) != 0 && errno != EEXIST { throw KbuildError.syscall("mkdir", spool, verb: "start the git gateway") }
        let (git, api) = KbuildSystem.routes(keg: keg, refs: refs, dataDir: dataDir, sandbox: sandbox, kbuild: kbuild, replicas: replicas,
                                             routerMetrics: routerMetrics)
        if let egress = api.egress {
            // The host's firewall for every process network of this kbuild, and the
            // namespaces of one-off runs and builds that a kill left.
            try await egress.installFirewall()
            _ = await egress.sweepUnheld()
        }
        if sandbox != nil { addSupervised("backup schedule", BackupScheduleService(take: { await api.takeScheduledBackups() }, report: report ?? { _ in })) }
        let token = try AdminToken.loadOrCreate(in: dataDir)
        ConnectionLimits.raiseFileLimit()
        // The dashboard asks the API over this host's loopback, once the plain listener is bound.
        let bound = APIBase()
        let dashboard = try Dashboard(dataDir: dataDir, apiBase: { bound.url })
        for server in try KbuildHTTP.servers(keg: keg, refs: refs, tokens: [token], git: git,
                                             api: { api.register(on: $0); dashboard.register(on: $0) },
                                             host: host, port: port, logger: logger, tls: tls, front: { [dashboard.middleware(tls: $0)] },
                                             onRunning: { url in
                                                 bound.set(url)
                                                 await onRunning(url)
                                             }) {
            add(server)
        }
        return ServerHandle(token: token)
    }

    /// The plain listener's URL as this host reaches it (a wildcard address is reached at loopback).
    final class APIBase: Sendable {
        private let value = Mutex<String?>(nil)
        var url: String? { value.withLock { $0 } }
        func set(_ url: String) {
            let local = url.replacingOccurrences(of: "//0.0.0.0:", with: "//127.0.0.1:").replacingOccurrences(of: "//[::]:", with: "//[::1]:")
            value.withLock { $0 = local }
        }
    }

    /// The git gateway's and the API's routes, as `startServer` serves them.
    static func routes(keg: Keg, refs: any RefStore, dataDir: DataDir, sandbox: Sandbox?, kbuild: String, replicas: (any KegUpstream)? = nil,
                       routerMetrics: RouterMetrics? = nil) -> (GitHTTPRoutes<KbuildHTTP.Context>, APIRoutes<KbuildHTTP.Context>) {
        let git = KbuildHTTP.gitRoutes(projectRoot: AppStore.gitRoot(dataDir), spoolDir: dataDir.root.path + "/git-spool",
                                       environment: ["KBUILD_DATA_DIR": dataDir.root.path])
        let egress = sandbox == nil ? nil : EgressNetwork(dataDir: dataDir.root.path, slot: EgressNetwork.oneOffSlot)
        let api = APIRoutes<KbuildHTTP.Context>(keg: keg, refs: refs, sandbox: sandbox, egress: egress, kbuild: kbuild, replicas: replicas,
                                                nodeLogDir: { dataDir.node($0).path + "/logs" },
                                                joinVia: {
                                                    guard let url = try? String(contentsOf: dataDir.tlsURLFile, encoding: .utf8),
                                                          let ca = try? String(contentsOf: dataDir.tls.appendingPathComponent("ca.crt"), encoding: .utf8),
                                                          let hash = try? ServerTLS.hash(pem: ca) else { return nil }
                                                    return (url.trimmingCharacters(in: .whitespacesAndNewlines), hash)
                                                }, routerMetrics: routerMetrics) { dataDir.nodeDirectories().map { $0 + "/logs" } + [dataDir.routerLogs.path] }
        return (git, api)
    }

    /// Every route the server serves, as `METHOD /path` (parameters as `{name}`,
    /// `**` for the rest of a path): what the authorization test must cover.
    public static func routeTable(keg: Keg, refs: any RefStore, dataDir: DataDir) -> [String] {
        let (git, api) = routes(keg: keg, refs: refs, dataDir: dataDir, sandbox: nil, kbuild: "kbuild")
        let dashboard = try? Dashboard(dataDir: dataDir, apiBase: { nil })
        let router = KbuildHTTP.router(keg: keg, refs: refs, tokens: [], git: git, api: { api.register(on: $0); dashboard?.register(on: $0) })
        return router.routes.map { "\($0.method) \($0.path)" }.sorted()
    }

    /// A build worker with a warm sandbox helper: claims queued builds and runs them.
    /// With `remote`, a worker on another machine: records, objects and the
    /// live log go through the control plane's API, and it waits on the queue
    /// through a long poll (a second at most between looks at expired claims).
    @discardableResult
    /// With `peers` (the other control planes sharing the state), a worker of one of them: what a build
    /// reads and this Keg lacks comes from them, and what it makes goes to them before it is named.
    public mutating func startBuildWorker(keg: Keg, refs: any RefStore, sandbox: Sandbox, name: String? = nil,
                                          remote: BuildWorkerRemote? = nil, peers: (any KegUpstream)? = nil) -> BuildWorker {
        let builder = Builder(keg: keg, records: remote?.records, refs: refs, upstream: remote?.upstream ?? peers, sandbox: sandbox,
                              egress: EgressNetwork(dataDir: keg.dataDir.root.path, slot: EgressNetwork.oneOffSlot),
                              worker: name ?? Builder.defaultWorkerName)
        let worker = BuildWorker(queue: BuildQueue(keg: keg, records: remote?.records, refs: refs), builder: builder,
                                 poll: remote == nil ? .milliseconds(200) : .seconds(1), liveLog: remote?.liveLog,
                                 report: { [report, logger] message in if let report { report(message) } else { logger.warning("\(message)") } })
        addSupervised("build worker", BuildWorkerService(worker: worker))
        addSupervised("build disk sweeper", BuildDiskSweeper(directory: keg.dataDir.root.path + "/builds/work", report: worker.report))
        return worker
    }

    /// The scheduler: releases and nodes → assignments, rollouts, reverts.
    @discardableResult
    public mutating func startScheduler(keg: Keg, refs: any RefStore, policy: RolloutPolicy = RolloutPolicy(),
                                        election: (any LeaderElection)? = nil, nodeLostAfter: TimeInterval = NodeRecord.defaultLease,
                                        log: @escaping @Sendable (String) -> Void = { _ in }) -> SchedulerService {
        let scheduler = SchedulerService(keg: keg, refs: refs, policy: policy, lease: nodeLostAfter, election: election, log: log)
        addSupervised("scheduler", scheduler)
        return scheduler
    }

    /// A node agent: runs what the scheduler assigns to its node. With `remote`,
    /// it pulls what its Keg lacks from there (a node that is a host of its own).
    @discardableResult
    /// `records` is the control plane's Keg when `keg` is the node's own.
    public mutating func startNodeAgent(_ config: NodeAgentConfig, keg: Keg, records: (any RecordContent)? = nil, refs: any RefStore, sandbox: Sandbox,
                                        remote: (any KegUpstream)? = nil, logSink: (any LogSink)? = nil,
                                        log: @escaping @Sendable (String) -> Void = { _ in }) -> NodeAgent {
        let agent = NodeAgent(config: config, keg: keg, records: records, refs: refs, sandbox: sandbox, remote: remote, logSink: logSink, log: log)
        addSupervised("node agent \(config.name)", agent)
        return agent
    }

    /// The router on `port`, fed from the nodes' reports; its table is the handle.
    /// With `requestLog`, which process answered each request is written down (for `kbuild trace REQUEST-ID`).
    @discardableResult
    /// `records` and `saveTo`: a router on a machine of its own (`kbuild router --join`) reads records through the
    /// API and keeps its last table in a file, serving it while the control plane is away.
    public mutating func startRouter(keg: Keg, records: (any RecordContent)? = nil, refs: any RefStore, host: String, port: Int,
                                     configuration: RouterConfiguration = RouterConfiguration(), saveTo: String? = nil,
                                     requestLog: RequestLog? = nil, metrics: RouterMetrics? = nil, https: HTTPSListener? = nil,
                                     onBound: @escaping @Sendable (Int) -> Void = { _ in }) -> RouteTable {
        let table = RouteTable()
        // An app that leaves the table (destroyed) leaves the metrics and the router's log files: a new app
        // of the same name must not read its predecessor's requests.
        table.observeApps { apps in
            metrics?.keep(apps)
            requestLog?.keep(apps)
        }
        addSupervised("route feed", RouteFeed(records: records ?? keg, refs: refs, table: table, saveTo: saveTo))
        if let requestLog { addSupervised("request log", requestLog) }
        addSupervised("router", RouterService(host: host, port: port, table: table, logger: logger, configuration: configuration, https: https,
                                              onBound: onBound,
                          onServed: { served in
                              requestLog?.record(served)
                              metrics?.record(served)
                          }))
        return table
    }
}

public struct ServerHandle: Sendable {
    /// The admin token every request needs.
    public let token: String
}

/// Every 10 s, removes the build disks of builds whose process was killed (a
/// worker, or a pusher's hook whose client hung up): while a worker is busy
/// with a long build, the disks of abandoned ones do not wait for it.
public struct BuildDiskSweeper: Service {
    let directory: String
    let report: @Sendable (String) -> Void

    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    let swept = await ScratchDisk.sweep(directory: directory)
                    if swept > 0 { report("build disks: removed \(swept) left by builds that were killed") }
                    try await Task.sleep(for: .seconds(10))
                }
            }
        } catch is CancellationError {}
    }
}

/// Every 20 s, takes the add-on backups whose schedule is due (`pg:backups:schedule`).
public struct BackupScheduleService: Service {
    let take: @Sendable () async -> [String]
    let report: @Sendable (String) -> Void

    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    for line in await take() { report(line) }
                    try await Task.sleep(for: .seconds(20))
                }
            }
        } catch is CancellationError {}
    }
}

/// What a build worker on another machine reaches the control plane through.
public struct BuildWorkerRemote: Sendable {
    public let records: any RecordContent
    public let upstream: any KegUpstream
    public let liveLog: any BuildLogSink

    public init(records: any RecordContent, upstream: any KegUpstream, liveLog: any BuildLogSink) {
        self.records = records
        self.upstream = upstream
        self.liveLog = liveLog
    }
}

/// A build worker under the service group: claims and runs builds until shutdown.
public struct BuildWorkerService: Service {
    public let worker: BuildWorker
    public init(worker: BuildWorker) { self.worker = worker }
    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await worker.run() }
        } catch is CancellationError {
            // Shutting down: a build in progress was cancelled; its claim runs out and
            // another worker (or the pusher's hook) takes it over.
        }
    }
}
