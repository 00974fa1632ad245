import ArgumentParser
import Builds
import Cluster
import Foundation
import KbuildAPI
import KbuildClient
import KbuildCore
import KbuildSystem
import Keg
import Router
import KegRemote
import Logging
import NodeAgent
import Sandbox
import Scheduler
import ServiceLifecycle
import KbuildState
import KbuildServer
import EtcdState
import GitGateway
import SQLiteState

/// `kbuild up`: everything on this machine, on embedded defaults, as one
/// program: each part started by its typed start function (KbuildSystem),
/// all under one ServiceGroup that shuts down gracefully on SIGINT/SIGTERM.
struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start kbuild on this machine (embedded defaults) and print what it serves.",
        discussion: """
            App processes outlive kbuild up: a restart (or an upgrade) adopts them; kbuild down stops them.
            With --nodes N above 1, each node agent is a host of its own: its own network namespace
            (10.A.I.2, reached over a veth pair), its own Keg, pulling images over HTTP.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port of the HTTP server: API, git, registry (0 picks a free one).")
    var port = 7070

    @Option(help: "Port of the HTTPS server for other machines (the same API, git and registry, with a certificate kbuild's own CA signs; 0 picks a free one).")
    var tlsPort = 7443

    @Option(help: "Address the HTTPS server listens on.")
    var tlsHost = "0.0.0.0"

    @Option(help: "The address other machines reach this one at, in join commands and the certificate (default: this machine's first global IPv4 address).")
    var advertiseAddress: String?

    @Option(help: "Port of the router, which serves apps at http://APP.localhost:PORT (0 picks a free one).")
    var routerPort = 8080

    @Option(help: "Port of the router's HTTPS listener: apps' domains by SNI with the certificates of kbuild certs:add, HTTP/2 by ALPN (0 picks a free one).")
    var httpsPort = 8443

    @Option(help: "Router: seconds an app may take, from the end of a request, to send its response head before the 504 (H12); an app's own with kbuild router:settings.")
    var requestTimeout = 30

    @Option(help: "Router: seconds a WebSocket (or other upgraded connection) may carry nothing either way before it is closed.")
    var websocketIdleTimeout = 300

    @Option(help: "Router: open connections one client address may hold; the next is answered 429.")
    var maxClientConnections = 1024

    @Option(help: "Build workers to run here (0 or 1; with 0, pushes wait in the queue for a worker that joins: kbuild worker, or kbuild workers:join-token NAME).")
    var workers = 1

    @Option(help: "Node agents to run here (0: none, run `kbuild agent` beside it; above 1: each in a network namespace of its own).")
    var nodes = 1

    @Option(help: "Memory each node offers to processes (default: all of this machine's).")
    var nodeMemory: String?

    @Option(help: "CPUs each node offers to processes (default: this machine's cores).")
    var nodeCpus: Double?

    @Option(help: "Log bytes kept per app process (the oldest half goes past it, as it writes).")
    var processLogCap = "64M"

    @Option(help: "Log bytes kept per app on each node (the oldest output goes first).")
    var appLogCap = "256M"

    @Option(help: ArgumentHelp("Where the state is: sqlite (embedded, this machine; the default) or etcd://host:2379[,host2:2379,…] for many control planes sharing one etcd cluster (default: $KBUILD_STATE, else what this data dir used).", valueName: "store"))
    var state: String?

    @Flag(help: "Make kbuild's state in an etcd that holds other data, or none although this data dir remembers a kbuild cluster.")
    var initState = false

    @Option(help: "The node agent's name with --nodes 1 (each control plane sharing an etcd needs its own).")
    var nodeName = "local"

    @Option(help: "Seconds without a report from a node before its processes are placed elsewhere (nodes report every second).")
    var nodeLostAfter: Double = NodeRecord.defaultLease

    @Option(help: "Rollouts: new processes allowed above the desired count.")
    var maxSurge = 1

    @Option(help: "Rollouts: processes below the desired count allowed to be unavailable (a large number with --max-surge 0 is stop-then-start).")
    var maxUnavailable = 0

    func validate() throws {
        guard (0...1).contains(workers) else { throw ValidationError("--workers must be 0 or 1, not \(workers)") }
        guard (0...16).contains(nodes) else { throw ValidationError("--nodes must be 0 to 16, not \(nodes)") }
        if let state, state != "sqlite" { _ = try EtcdClient.parse(state) }
        guard !nodeName.isEmpty, nodeName.count <= 63, nodeName.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }),
              nodeName.first?.isLetter == true else {
            throw ValidationError("--node-name must be letters, digits and dashes, starting with a letter, not \(nodeName.debugQuoted)")
        }
        guard (2...3600).contains(nodeLostAfter) else { throw ValidationError("--node-lost-after must be 2 to 3600 seconds, not \(nodeLostAfter)") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0 to 65535, not \(port)") }
        guard (0...65535).contains(tlsPort) else { throw ValidationError("--tls-port must be 0 to 65535, not \(tlsPort)") }
        guard (0...65535).contains(routerPort) else { throw ValidationError("--router-port must be 0 to 65535, not \(routerPort)") }
        guard (0...65535).contains(httpsPort) else { throw ValidationError("--https-port must be 0 to 65535, not \(httpsPort)") }
        guard RouterSettings.timeoutRange.contains(requestTimeout) else { throw ValidationError("--request-timeout must be 1 to 3600 seconds, not \(requestTimeout)") }
        guard (1...86400).contains(websocketIdleTimeout) else {
            throw ValidationError("--websocket-idle-timeout must be 1 to 86400 seconds, not \(websocketIdleTimeout)")
        }
        guard (1...1_000_000).contains(maxClientConnections) else {
            throw ValidationError("--max-client-connections must be 1 to 1000000, not \(maxClientConnections)")
        }
        guard maxSurge >= 0, maxUnavailable >= 0, maxSurge + maxUnavailable > 0 else {
            throw ValidationError("--max-surge and --max-unavailable must be 0 or more, and not both 0")
        }
    }

    var routerConfiguration: RouterConfiguration {
        var configuration = RouterConfiguration()
        configuration.requestTimeout = .seconds(Int64(requestTimeout))
        configuration.upgradedIdleTimeout = .seconds(Int64(websocketIdleTimeout))
        configuration.maxConnectionsPerClient = maxClientConnections
        return configuration
    }

    func run() async throws {
        let dataDir = global.dir
        try dataDir.create()
        var logger = Logger(label: "kbuild")
        logger.logLevel = ProcessInfo.processInfo.environment["KBUILD_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        let verbose = logger.logLevel <= .info
        let log: @Sendable (String) -> Void = { line in if verbose { say(line) } }
        let (keg, refs, etcd) = try await openState(dataDir)
        let buildpacks = try await BuildpackStore(keg: keg, refs: refs).registerShipped(actor: "kbuild up")
        // Nodes that are hosts of their own pull from this server, and control planes sharing etcd are
        // named by it, so its port is known up front.
        let port = (nodes > 1 || etcd != nil) && self.port == 0 ? try freeTCPPort() : self.port
        let nodeConfigs = try nodeConfigurations(dataDir)
        let serverURL = "http://\(host):\(port)"

        var system = KbuildSystem(logger: logger) { say($0) }
        // Between machines: HTTPS with kbuild's own CA; plain HTTP is for this machine.
        let advertised = advertiseAddress ?? hostAddresses().first ?? "127.0.0.1"
        // Sharing etcd: one admin token for every control plane, and their Kegs and repositories kept alike.
        let planes: ControlPlanes? = if let etcd {
            try await ControlPlanes.join(etcd: etcd, name: "\(advertised):\(port)", dataDir: dataDir)
        } else { nil }
        let identity = try ServerTLS.loadOrCreate(directory: dataDir.tls.path, hosts: [advertised] + hostAddresses() + [ProcessInfo.processInfo.hostName])
        if !["127.0.0.1", "localhost", "::1"].contains(host) {
            say("warning: plain HTTP on \(host): tokens cross the network in the clear there; other machines should use the https port")
        }
        let tls = KbuildHTTP.TLSListener(host: tlsHost, port: tlsPort, identity: identity) { url in
            let port = url.split(separator: ":").last.map(String.init) ?? ""
            let reachable = "https://\(advertised):\(port)"
            try? Data((reachable + "\n").utf8).write(to: dataDir.tlsURLFile, options: .atomic)
            planes?.bound(reachable)
            say("tls       \(reachable) (other machines; CA \(identity.caHash) in \(dataDir.tls.path)/ca.crt; kbuild nodes:join-token NODE)")
        }
        let routerMetrics = RouterMetrics()
        try await system.startServer(keg: keg, refs: refs, dataDir: dataDir, kbuild: kbuildExecutable, host: host, port: port,
                                                  sandbox: try Sandbox(), tls: tls, replicas: planes?.kegs, routerMetrics: routerMetrics) { [workers, nodes] url in
            try? Data((url + "\n").utf8).write(to: dataDir.serverURLFile, options: .atomic)
            say("kbuild up: data dir \(dataDir.root.path) (admin token in \(dataDir.adminToken.path))")
            say("keg       \(url)/v1/objects/")
            say("registry  \(url.replacingOccurrences(of: "http://", with: ""))/ (apps as APP:latest, stacks as stacks/NAME:latest)")
            say("git       \(url)/APP.git (kbuild apps:create APP; kbuild git:remote APP; git push kbuild main)")
            say("builds    \(workers) worker\(workers == 1 ? "" : "s"); buildpacks \(buildpacks.map(\.name).joined(separator: ", "))")
            say("api       \(url)\(API.prefix)/ (kbuild apps, releases, config, ps …)")
            say("dashboard \(url)/ (log in with a token, or kbuild dashboard for a one-time link)")
            say("state     \(etcd.map { "\($0.spec) (etcd; kbuild up on other machines with the same --state share it)" } ?? "\(dataDir.refStore.path) (SQLite)")")
            say("nodes     \(nodes == 0 ? "none here (kbuild agent)" : nodeConfigs.map { "\($0.name) \($0.address) (\($0.capacity.description))" }.joined(separator: ", "))")
        }
        if workers > 0 { system.startBuildWorker(keg: keg, refs: refs, sandbox: try Sandbox(warmHelpers: 1), peers: planes?.kegs) }
        if let planes {
            system.addSupervised("control plane registration", ControlPlanes.Registration(planes: planes, say: say))
            system.addSupervised("pruner", ControlPlanes.Pruning(etcd: planes.members.etcd, holder: planes.name, say: say))
            system.addSupervised("git mirror", ControlPlanes.Mirror(mirror: GitMirror(apps: AppStore(keg: keg, refs: refs), kbuild: kbuildExecutable,
                                                                                     peers: planes.gitPeers, say: say)))
        }
        // With the state on etcd, any number of control planes share it and one scheduler is active, elected.
        let election = etcd.map { EtcdElection(store: EtcdRefStore(etcd: $0), holder: "\(ProcessInfo.processInfo.hostName) \(advertised):\(port) \(dataDir.root.path)", say: say) }
        system.startScheduler(keg: keg, refs: refs, policy: RolloutPolicy(maxSurge: maxSurge, maxUnavailable: maxUnavailable), election: election, nodeLostAfter: nodeLostAfter) { say($0) }
        for config in nodeConfigs {
            if nodes == 1 {
                system.startNodeAgent(config, keg: keg, refs: refs, sandbox: try Sandbox(), remote: planes?.kegs, log: log)
            } else {
                // A host of its own, reached as one on another machine is: its own Keg and records cache, the
                // control plane's state through the API with the node's own join token (made anew at each start).
                let own = DataDir(root: URL(fileURLWithPath: config.stateDir + "/host"))
                try own.create()
                let tokens = AppTokens(keg: keg, refs: refs)
                try? await tokens.revoke(name: "node-\(config.name)", actor: "kbuild up")
                let token = try await tokens.createJoin(node: config.name, address: config.address, actor: "kbuild up")
                let ownKeg = try Keg(dataDir: own)
                let client = try KbuildClient(base: serverURL, token: token, actor: "agent \(config.name)")
                system.startNodeAgent(config, keg: ownKeg, records: RemoteRecords(client: client, cache: ownKeg), refs: RemoteRefStore(client: client),
                                      sandbox: try Sandbox(), remote: KegRemote(baseURL: URL(string: serverURL)!, token: token, client: client.http), log: log)
            }
        }
        system.startRouter(keg: keg, refs: refs, host: host, port: routerPort, configuration: routerConfiguration,
                           requestLog: RequestLog(directory: dataDir.router.path, metrics: routerMetrics), metrics: routerMetrics,
                           https: try RouterTLS.listener(host: host, port: httpsPort) { bound in
                               try? Data("https://\(host):\(bound)\n".utf8).write(to: dataDir.routerHTTPSURLFile, options: .atomic)
                               say("https     https://APP.localhost:\(bound)/ (apps' domains by SNI: kbuild certs:add APP CERT KEY, or certs:generate APP)")
                           }) { bound in
            try? Data("http://\(host):\(bound)\n".utf8).write(to: dataDir.routerURLFile, options: .atomic)
            say("router    http://APP.localhost:\(bound)/ (by Host header; custom domains with kbuild domains:add)")
        }
        defer {
            try? FileManager.default.removeItem(at: dataDir.tlsURLFile)
            try? FileManager.default.removeItem(at: dataDir.serverURLFile)
            try? FileManager.default.removeItem(at: dataDir.routerURLFile)
            try? FileManager.default.removeItem(at: dataDir.routerHTTPSURLFile)
        }
        try await system.run()
    }

    /// The Keg and ref store: SQLite in the data dir, or etcd (checked to hold this data dir's kbuild
    /// cluster, or none yet), whose client is returned too. Waits while etcd is down.
    func openState(_ dataDir: DataDir) async throws -> (Keg, any RefStore, EtcdClient?) {
        let remembered = try EtcdCluster.Remembered.read(dataDir)
        let spec = state ?? ProcessInfo.processInfo.environment["KBUILD_STATE"].flatMap { $0.isEmpty ? nil : $0 } ?? remembered?.state ?? "sqlite"
        guard spec != "sqlite" else {
            if let remembered, remembered.state != "sqlite" {
                throw KbuildError(.conflict, "this data dir's state is in \(remembered.state): start with --state \(remembered.state), or use another data dir")
            }
            return (try Keg(dataDir: dataDir), try global.openRefs(), nil)
        }
        let etcd = try EtcdClient(spec)
        if remembered == nil, FileManager.default.fileExists(atPath: dataDir.refStore.path),
           let revision = try? await SQLiteRefStore(path: dataDir.refStore.path).currentRevision(), revision > .zero {
            throw KbuildError(.conflict, "this data dir's state is in \(dataDir.refStore.path) (revision \(revision)); kbuild does not move it to etcd: use a new data dir with --state \(spec)")
        }
        let cluster = try await EtcdCluster.open(etcd, remembered: remembered?.cluster, initialize: initState, wait: true) { say($0) }
        try EtcdCluster.Remembered(state: etcd.spec, cluster: cluster).write(dataDir)
        let records = EtcdRecords(etcd: etcd)
        return (try Keg(dataDir: dataDir, records: records), EtcdRefStore(etcd: etcd), etcd)
    }

    /// One node on the host's network (`local`), or N nodes each in a network namespace of its own.
    func nodeConfigurations(_ dataDir: DataDir) throws -> [NodeAgentConfig] {
        let caps = (process: try parseBytes(processLogCap, what: "--process-log-cap"), app: try parseBytes(appLogCap, what: "--app-log-cap"))
        var capacity = NodeAgentConfig.hostCapacity()
        if let nodeMemory { capacity.memory = try parseBytes(nodeMemory, what: "node memory") }
        if let nodeCpus {
            guard nodeCpus > 0 else { throw ValidationError("--node-cpus must be positive") }
            capacity.cpus = nodeCpus
        }
        if nodes == 1 {
            var config = NodeAgentConfig(name: nodeName, capacity: capacity, stateDir: dataDir.node(nodeName).path)
            config.egress = EgressNetwork(dataDir: dataDir.root.path, slot: 0)
            (config.logCapPerProcess, config.logCapPerApp) = caps
            config.lease = nodeLostAfter
            return [config]
        }
        return try (0..<nodes).map { i in
            let name = "n\(i + 1)"
            let network = NodeNetwork.plan(dataDir: dataDir.root.path, index: i + 1)
            try network.ensure()
            let stateDir = dataDir.node(name).path
            try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try JSONEncoder().encode(network).write(to: URL(fileURLWithPath: stateDir + "/network.json"))
            var config = NodeAgentConfig(name: name, address: network.nodeAddress, network: .namespace(network.namespace), capacity: capacity, stateDir: stateDir)
            config.egress = EgressNetwork(dataDir: dataDir.root.path, slot: i + 1, parent: network.namespace, publishOn: network.nodeAddress)
            (config.logCapPerProcess, config.logCapPerApp) = caps
            config.lease = nodeLostAfter
            return config
        }
    }
}

/// This machine's global IPv4 addresses (not loopback), in interface order.
func hostAddresses() -> [String] {
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0, let first = list else { return [] }
    defer { freeifaddrs(list) }
    var out: [String] = []
    for entry in sequence(first: first, next: { $0.pointee.ifa_next }) {
        guard let addr = entry.pointee.ifa_addr, addr.pointee.sa_family == sa_family_t(AF_INET),
              Int32(entry.pointee.ifa_flags) & Int32(IFF_LOOPBACK) == 0, Int32(entry.pointee.ifa_flags) & Int32(IFF_UP) != 0 else { continue }
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
            var a = sin.pointee.sin_addr
            _ = inet_ntop(AF_INET, &a, &text, socklen_t(INET_ADDRSTRLEN))
        }
        let address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if !out.contains(address) { out.append(address) }
    }
    return out
}

/// A TCP port nothing listens on now.
func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 } }
    guard bound else { throw KbuildError.syscall("bind", "0.0.0.0:0", verb: "find a free port") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// `kbuild agent`: a node agent on its own, beside a `kbuild up --nodes 0` on
/// this machine (sharing its data dir), or on another machine with `--join`
/// (a data dir of its own; the control plane reached over HTTP only).
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run a node agent: run the processes the scheduler assigns to this node until SIGINT/SIGTERM.",
        discussion: """
            Its processes outlive it: a new agent with the same --name adopts them. Stop them with kbuild down.
            On another machine: kbuild agent --join URL --token TOKEN --name NODE (kbuild nodes:join-token NODE prints it); \
            the agent keeps images and what it has read in its own data dir and reaches the control plane only through URL.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "The control plane to join (its API URL); the agent then uses the network only, never the control plane's files.")
    var join: String?
    @Option(help: "The node's join token (with --join; kbuild nodes:join-token NODE makes one). Default: $KBUILD_JOIN_TOKEN.")
    var token: String?
    @Option(help: "The hash of the control plane's CA (sha256:…), which an https --join URL's certificate must chain to (the join command names it).")
    var caHash: String?
    @Option(help: "The node's name.") var name = "local"
    @Option(help: "The address the router reaches this node's processes at.") var address = "127.0.0.1"
    @Option(help: "The network processes join: host, or a network namespace name or path.") var network = "host"
    @Option(help: "Memory the node offers (default: all of this machine's).") var memory: String?
    @Option(help: "CPUs the node offers (default: this machine's cores).") var cpus: Double?
    @Option(help: "egress: each process in a network namespace of its own, NAT to the outside only (the default); shared: processes join --network as it is.")
    var isolation = "egress"

    func validate() throws {
        guard Names.isAppName(name) else { throw ValidationError("invalid node name \(name.debugDescription): a-z, 0-9 and '-', starting with a letter") }
        guard ["egress", "shared"].contains(isolation) else { throw ValidationError("--isolation must be egress or shared, not \(isolation.debugDescription)") }
        if let join {
            try ControlPlaneJoin.validate(join: join, token: joinToken, caHash: caHash, hint: "kbuild nodes:join-token \(name)")
            // On this machine's own network, each process's namespace (100.64.0.0/10) is reachable from here only:
            // a router on another machine could not reach it.
            if network == "host" && isolation == "egress" {
                throw ValidationError("""
                    a joined node's processes must be reachable from the control plane's router: give --network NS (a \
                    network namespace routed from --address, as kbuild up --nodes N makes) or --isolation shared (its processes \
                    on this machine's network, at --address)
                    """)
            }
        } else if token != nil || caHash != nil {
            throw ValidationError("--token and --ca-hash are for joining: they need --join URL")
        }
    }

    var joinToken: String? { token ?? ProcessInfo.processInfo.environment["KBUILD_JOIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } }

    func run() async throws {
        var config = NodeAgentConfig(name: name, address: address, network: try SandboxNetwork(parsing: network),
                                     stateDir: global.dir.node(name).path)
        if let memory { config.capacity.memory = try parseBytes(memory, what: "node memory") }
        if let cpus { config.capacity.cpus = cpus }
        if isolation == "egress" {
            let shared = try SandboxNetwork(parsing: network)
            // Its own slot of addresses: nN takes N, other names one by their hash.
            let slot = Int(name.dropFirst()).flatMap { name.hasPrefix("n") && (1...16).contains($0) ? $0 : nil }
                ?? 1 + Int(KID(hashing: Data(name.utf8)).hex.prefix(2), radix: 16)! % 16
            if case .namespace(let ns) = shared {
                config.egress = EgressNetwork(dataDir: global.dir.root.path, slot: slot, parent: ns, publishOn: address)
            } else {
                config.egress = EgressNetwork(dataDir: global.dir.root.path, slot: 0)
            }
        }
        var logger = Logger(label: "kbuild-agent")
        logger.logLevel = .warning
        var system = KbuildSystem(logger: logger) { say($0) }
        if let join, let token = joinToken {
            // A machine of its own: its Keg holds the images it pulled and the records it read; everything else is the control plane's API.
            try global.dir.create()
            let keg = try Keg(dataDir: global.dir)
            let client = try await ControlPlaneJoin.connect(join: join, token: token, caHash: caHash, dataDir: global.dir,
                                                           what: "node \(name)", actor: "agent \(name)")
            let refs = RemoteRefStore(client: client)
            say("kbuild agent \(name): joined \(client.base); \(config.capacity.description), state in \(config.stateDir)")
            system.startNodeAgent(config, keg: keg, records: RemoteRecords(client: client, cache: keg), refs: refs, sandbox: try Sandbox(),
                                  remote: KegRemote(baseURL: URL(string: client.base)!, token: token, client: client.http), logSink: client) { say($0) }
        } else {
            say("kbuild agent \(name): \(config.capacity.description), state in \(config.stateDir)")
            system.startNodeAgent(config, keg: try global.openKeg(), refs: try global.openRefs(), sandbox: try Sandbox()) { say($0) }
        }
        try await system.run()
    }
}

/// The router's HTTPS listener as `kbuild up` and `kbuild router` start it.
enum RouterTLS {
    static func listener(host: String, port: Int, onBound: @escaping @Sendable (Int) -> Void) throws -> HTTPSListener {
        // The TLS library wants a certificate to start with; it is never sent (see HTTPSListener).
        let (chain, key) = try AppCertificate.selfSigned(names: ["kbuild-router.invalid"])
        return HTTPSListener(host: host, port: port, placeholder: try ServedCertificate(id: "placeholder", chainPEM: chain, keyPEM: key),
                             onBound: onBound)
    }
}
