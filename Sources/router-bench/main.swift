// The router as `kbuild up` runs it, for benchmarks/router.sh: routes bench.localhost to one
// backend (and ws.localhost to a WebSocket one), with the request log (trace lines and the app's
// router lines, in ROUTER_LOG_DIR) and the metrics on (off with ROUTER_BENCH_BARE, to measure them);
// with --https, an HTTPS listener too.
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Cluster
import Foundation
import Logging
import Router
import ServiceLifecycle

let usage = "usage: router-bench LISTEN_PORT BACKEND_PORT [--ws-backend PORT] [--https PORT CERT.pem KEY.pem]"
var arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count >= 2, let listenPort = Int(arguments[0]), let backendPort = Int(arguments[1]) else {
    print(usage)
    exit(2)
}
arguments.removeFirst(2)
var logger = Logger(label: "router-bench")
logger.logLevel = .warning
let table = RouteTable()
var apps = ["bench": [Endpoint(host: "127.0.0.1", port: backendPort, process: "bench.web.1")]]
var https: HTTPSListener?
var certificates: [String: ServedCertificate] = [:]
while let option = arguments.first {
    if option == "--ws-backend", arguments.count >= 2, let port = Int(arguments[1]) {
        apps["ws"] = [Endpoint(host: "127.0.0.1", port: port, process: "ws.web.1")]
        arguments.removeFirst(2)
    } else if option == "--https", arguments.count >= 4, let port = Int(arguments[1]) {
        let certificate = try ServedCertificate(id: "bench", chainPEM: String(contentsOfFile: arguments[2], encoding: .utf8),
                                                keyPEM: String(contentsOfFile: arguments[3], encoding: .utf8))
        // The benchmark's wrk asks for https://localhost (no other name resolves here, and an address sends no SNI).
        certificates = ["bench.localhost": certificate, "localhost": certificate]
        https = HTTPSListener(host: "127.0.0.1", port: port, placeholder: certificate)
        arguments.removeFirst(4)
    } else {
        print(usage)
        exit(2)
    }
}
table.update(apps: apps, domains: [:], certificates: certificates)
var configuration = RouterConfiguration()
if let loops = getenv("ROUTER_EVENT_LOOPS").flatMap({ Int(String(cString: $0)) }) { configuration.eventLoops = loops }
// Every benchmark client comes from 127.0.0.1: the per-address limit would stop the WebSocket row.
configuration.maxConnectionsPerClient = 100_000
let logDirectory = getenv("ROUTER_LOG_DIR").map { String(cString: $0) } ?? NSTemporaryDirectory() + "router-bench-\(getpid())"
let metrics = RouterMetrics()
let requestLog = RequestLog(directory: logDirectory, metrics: metrics)
let bare = getenv("ROUTER_BENCH_BARE") != nil
let onServed: @Sendable (ServedRequest) -> Void = { served in
    guard !bare else { return }
    requestLog.record(served)
    metrics.record(served)
}
let router = RouterService(
    host: "127.0.0.1", port: listenPort, table: table, logger: logger, configuration: configuration, https: https,
    onServed: onServed)
let group = ServiceGroup(services: [requestLog, router], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
try await group.run()
