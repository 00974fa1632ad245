import ArgumentParser
import Cluster
import Foundation
import KbuildClient
import KbuildCore
import KbuildSystem
import Keg
import Logging
import NodeAgent
import ServiceLifecycle
import Router

/// `kbuild router --join URL`: the router on a machine of its own, in front of
/// the nodes, reading the route table from the control plane's API. When the
/// control plane is away (stopped, upgraded, failing over) it keeps serving
/// the last table it read, and a restart reads that table back from its data
/// dir, so apps keep serving while no control plane runs.
struct RouterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "router",
        abstract: "Run a router on its own, joined to a control plane, until SIGINT/SIGTERM.",
        discussion: """
            It routes by Host header as kbuild up's router does (APP.SUFFIX and custom domains) and keeps its last
            route table in DATA/router/routes.json. It reads the state with an admin token (a router-only token is
            not there yet): run it on a machine you trust as you trust the control plane.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "The control plane to join (its API URL).") var join: String
    @Option(help: "An admin token of the control plane (default: $KBUILD_TOKEN).") var token: String?
    @Option(help: "The hash of the control plane's CA (sha256:…) an https --join URL's certificate must chain to.") var caHash: String?
    @Option(help: "Address to listen on.") var host = "0.0.0.0"
    @Option(help: "Port to listen on (0 picks a free one).") var port = 8080
    @Option(help: "Port of the HTTPS listener: apps' domains by SNI with their certificates, HTTP/2 by ALPN (0 picks a free one).") var httpsPort = 8443

    var resolvedToken: String? { token ?? ProcessInfo.processInfo.environment["KBUILD_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } }

    func validate() throws {
        try ControlPlaneJoin.validate(join: join, token: resolvedToken, caHash: caHash, hint: "the admin token file (DATA/admin.token) and kbuild nodes:join-token's --ca-hash")
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0 to 65535, not \(port)") }
        guard (0...65535).contains(httpsPort) else { throw ValidationError("--https-port must be 0 to 65535, not \(httpsPort)") }
    }

    func run() async throws {
        let dataDir = global.dir
        try dataDir.create()
        try FileManager.default.createDirectory(at: dataDir.router, withIntermediateDirectories: true)
        let keg = try Keg(dataDir: dataDir)
        var logger = Logger(label: "kbuild-router")
        logger.logLevel = .warning
        // The table kept from the last run serves even if the control plane cannot be reached now.
        let client: KbuildClient
        do {
            client = try await ControlPlaneJoin.connect(join: join, token: resolvedToken!, caHash: caHash, dataDir: dataDir, what: "a router", actor: "router")
        } catch let e as KbuildError where FileManager.default.fileExists(atPath: dataDir.router.appendingPathComponent("routes.json").path) {
            // Joined before: serve the kept table with the CA kept then, and follow the control plane when it is back.
            say("warning: \(e.message); serving the route table kept from the last run until it answers")
            let kept = try caHash.map { _ in try String(contentsOfFile: dataDir.root.path + "/control-plane-ca.crt", encoding: .utf8) }
            client = try KbuildClient(base: join.hasSuffix("/") ? String(join.dropLast()) : join, token: resolvedToken!, actor: "router", trusting: kept)
        }
        var system = KbuildSystem(logger: logger) { say($0) }
        system.startRouter(keg: keg, records: RemoteRecords(client: client, cache: keg), refs: RemoteRefStore(client: client), host: host, port: port,
                           saveTo: dataDir.router.appendingPathComponent("routes.json").path,
                           requestLog: RequestLog(directory: dataDir.router.path),
                           https: try RouterTLS.listener(host: host, port: httpsPort) { [host] bound in say("https     https://\(host):\(bound)/ (by SNI)") }
        ) { [host] bound in
            say("router    http://\(host):\(bound)/ (by Host header), routes from \(join)")
        }
        // The apps' router lines go to the control plane, where `kbuild logs APP` reads them.
        system.addSupervised("router log shipper", RouterLogShipping(shipper: LogShipper(
            node: Self.shippingName(ProcessInfo.processInfo.hostName), directory: dataDir.routerLogs.path, sink: client, log: { say($0) })))
        try await system.run()
    }

    /// `router-HOST` as a node name (a DNS label): what the control plane keeps this router's log copies under.
    static func shippingName(_ host: String) -> String {
        let label = String(host.lowercased().map { ("a"..."z").contains($0) || ("0"..."9").contains($0) ? $0 : "-" })
        var name = String(("router-" + label).prefix(63))
        while name.hasSuffix("-") { name.removeLast() }
        return name
    }
}

/// The router's log shipper as a service of its own.
struct RouterLogShipping: Service {
    let shipper: LogShipper
    func run() async throws {
        await cancelWhenGracefulShutdown { await shipper.run() }
    }
}
