import ArgumentParser
import Builds
import Cluster
import Foundation
import KbuildAPI
import NodeAgent
import Router
import Scheduler
import GitGateway
import Sandbox
import KbuildCore
import KbuildServer
import Keg
import Logging
import ServiceLifecycle

/// `kbuild up`: everything on this machine, on embedded defaults, as one
/// program under one ServiceGroup that shuts down gracefully on SIGINT/SIGTERM.
struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start kbuild on this machine (embedded defaults) and print what it serves."
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port of the HTTP server (0 picks a free one).")
    var port = 7070

    @Option(help: "Build workers to run here (0 or 1; pushes then build in their own hook when none is running).")
    var workers = 1

    @Option(help: "Port of the router, which serves apps at http://APP.localhost:PORT (0 picks a free one).")
    var routerPort = 8080

    @Option(help: "Node agents to run here (0: none; run `kbuild agent` beside it instead).")
    var nodes = 1

    @Option(help: "Memory the node offers to processes (default: all of this machine's).")
    var nodeMemory: String?

    @Option(help: "CPUs the node offers to processes (default: this machine's cores).")
    var nodeCpus: Double?

    func validate() throws {
        guard (0...1).contains(workers) else { throw ValidationError("--workers must be 0 or 1, not \(workers)") }
        guard (0...1).contains(nodes) else { throw ValidationError("--nodes must be 0 or 1, not \(nodes)") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0 to 65535, not \(port)") }
        guard (0...65535).contains(routerPort) else { throw ValidationError("--router-port must be 0 to 65535, not \(routerPort)") }
    }

    func run() async throws {
        let dataDir = global.dir
        let keg = try Keg(dataDir: dataDir)
        let token = try AdminToken.loadOrCreate(in: dataDir)
        var logger = Logger(label: "kbuild")
        logger.logLevel = ProcessInfo.processInfo.environment["KBUILD_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning

        let refs = try global.openRefs()
        // The git gateway: hooks that point at this executable, the shipped buildpacks.
        let apps = AppStore(keg: keg, refs: refs)
        try await apps.installHooks(kbuild: kbuildExecutable)
        let buildpacks = try await BuildpackStore(keg: keg, refs: refs).registerShipped(actor: "kbuild up")
        let spool = dataDir.root.path + "/git-spool"
        if mkdir(spool, 0o700) != 0 && errno != EEXIST { throw KbuildError.syscall("mkdir", spool, verb: "start the git gateway") }
        let git = KbuildHTTP.gitRoutes(projectRoot: AppStore.gitRoot(dataDir), spoolDir: spool,
                                       environment: ["KBUILD_DATA_DIR": dataDir.root.path])
        // One build worker, with a warm sandbox helper.
        let worker = BuildWorker(queue: BuildQueue(keg: keg, refs: refs),
                                 builder: Builder(keg: keg, refs: refs, sandbox: try Sandbox(warmHelpers: workers > 0 ? 1 : 0)))

        // The API, the scheduler and this machine's node agent.
        let api = APIRoutes<KbuildHTTP.Context>(keg: keg, refs: refs, sandbox: try Sandbox()) { nodeStateDirs(dataDir).map { $0 + "/logs" } }
        let scheduler = SchedulerService(keg: keg, refs: refs) { line in say(line) }
        let agentConfig = NodeAgentConfig(name: "local", capacity: try capacity(), stateDir: dataDir.node("local").path)

        let server = KbuildHTTP.server(keg: keg, refs: refs, tokens: [token], git: git, api: { api.register(on: $0) },
                                       host: host, port: port, logger: logger) { url in
            try? Data((url + "\n").utf8).write(to: dataDir.serverURLFile, options: .atomic)
            say("kbuild up: data dir \(dataDir.root.path) (admin token in \(dataDir.adminToken.path))")
            say("keg       \(url)/v1/objects/")
            say("registry  \(url.replacingOccurrences(of: "http://", with: ""))/ (apps as APP:latest, stacks as stacks/NAME:latest)")
            say("git       \(url)/APP.git (kbuild apps:create APP; kbuild git:remote APP; git push kbuild main)")
            say("builds    \(workers) worker\(workers == 1 ? "" : "s"); buildpacks \(buildpacks.map(\.name).joined(separator: ", "))")
            say("api       \(url)\(API.prefix)/ (kbuild apps, releases, config, ps …)")
            say("nodes     \(nodes == 0 ? "none here" : "local (\(agentConfig.capacity.description))")")
        }
        // The router, fed from the nodes' reports.
        let table = RouteTable()
        let router = RouterService(host: host, port: routerPort, table: table, logger: logger) { bound in
            say("router    http://APP.localhost:\(bound)/ (by Host header; custom domains with kbuild domains:add)")
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: server), .init(service: scheduler), .init(service: RouteFeed(keg: keg, refs: refs, table: table)), .init(service: router),
        ]
        if workers > 0 { services.append(.init(service: BuildWorkerService(worker: worker))) }
        if nodes > 0 {
            let verbose = logger.logLevel <= .info
            let log: @Sendable (String) -> Void = { line in if verbose { say(line) } }
            services.append(.init(service: NodeAgent(config: agentConfig, keg: keg, refs: refs, sandbox: try Sandbox(), log: log)))
        }
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        defer { try? FileManager.default.removeItem(at: dataDir.serverURLFile) }
        try await group.run()
    }
}

extension UpCommand {
    func capacity() throws -> Resources {
        var c = NodeAgentConfig.hostCapacity()
        if let nodeMemory { c.memory = try parseBytes(nodeMemory, what: "node memory") }
        if let nodeCpus {
            guard nodeCpus > 0 else { throw ValidationError("--node-cpus must be positive") }
            c.cpus = nodeCpus
        }
        return c
    }
}

/// The build worker under the service group: claims and runs builds until shutdown.
struct BuildWorkerService: Service {
    let worker: BuildWorker
    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await worker.run() }
        } catch is CancellationError {
            // Shutting down: a build in progress was cancelled; its claim runs out and
            // another worker (or the pusher's hook) takes it over.
        }
    }
}

/// `kbuild worker`: a build worker on its own, beside (or instead of) the one in `kbuild up`.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a build worker: claim queued builds and run them until SIGINT/SIGTERM."
    )
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let keg = try global.openKeg()
        let refs = try global.openRefs()
        let worker = BuildWorker(queue: BuildQueue(keg: keg, refs: refs),
                                 builder: Builder(keg: keg, refs: refs, sandbox: try Sandbox(warmHelpers: 1)))
        say("kbuild worker \(worker.builder.worker): waiting for builds in \(global.dir.root.path)")
        var logger = Logger(label: "kbuild-worker")
        logger.logLevel = .warning
        let group = ServiceGroup(configuration: .init(services: [.init(service: BuildWorkerService(worker: worker))],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// `kbuild agent`: a node agent on its own, beside a `kbuild up --nodes 0`
/// (or on another machine that shares the ref store).
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run a node agent: run the processes the scheduler assigns to this node until SIGINT/SIGTERM.",
        discussion: "Its processes outlive it: a new agent with the same --name adopts them. Stop them with kbuild down."
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "The node's name.") var name = "local"
    @Option(help: "The address the router reaches this node's processes at.") var address = "127.0.0.1"
    @Option(help: "The network processes join: host, or a network namespace name or path.") var network = "host"
    @Option(help: "Memory the node offers (default: all of this machine's).") var memory: String?
    @Option(help: "CPUs the node offers (default: this machine's cores).") var cpus: Double?

    func validate() throws {
        guard Names.isAppName(name) else { throw ValidationError("invalid node name \(name.debugDescription): a-z, 0-9 and '-', starting with a letter") }
    }

    func run() async throws {
        let keg = try global.openKeg()
        let refs = try global.openRefs()
        var config = NodeAgentConfig(name: name, address: address, network: try SandboxNetwork(parsing: network),
                                     stateDir: global.dir.node(name).path)
        if let memory { config.capacity.memory = try parseBytes(memory, what: "node memory") }
        if let cpus { config.capacity.cpus = cpus }
        say("kbuild agent \(name): \(config.capacity.description), state in \(config.stateDir)")
        var logger = Logger(label: "kbuild-agent")
        logger.logLevel = .warning
        let agent = NodeAgent(config: config, keg: keg, refs: refs, sandbox: try Sandbox()) { say($0) }
        let group = ServiceGroup(configuration: .init(services: [.init(service: agent)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
