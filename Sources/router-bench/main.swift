// The router alone, for benchmarks/router.sh: routes bench.localhost to one backend.
// Usage: router-bench LISTEN_PORT BACKEND_PORT [BACKEND_HOST]
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Logging
import Router
import ServiceLifecycle

let arguments = CommandLine.arguments
guard arguments.count >= 3, let listenPort = Int(arguments[1]), let backendPort = Int(arguments[2]) else {
    print("usage: router-bench LISTEN_PORT BACKEND_PORT [BACKEND_HOST]")
    exit(2)
}
var logger = Logger(label: "router-bench")
logger.logLevel = .warning
let table = RouteTable()
let backend = Endpoint(host: arguments.count > 3 ? arguments[3] : "127.0.0.1", port: backendPort, process: "bench.web.1")
table.update(apps: ["bench": [backend]], domains: [:])
var configuration = RouterConfiguration()
if let loops = getenv("ROUTER_EVENT_LOOPS").flatMap({ Int(String(cString: $0)) }) { configuration.eventLoops = loops }
let router = RouterService(
    host: "127.0.0.1", port: listenPort, table: table, logger: logger, configuration: configuration)
let group = ServiceGroup(services: [router], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
try await group.run()
