import ArgumentParser
import Foundation
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

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0 to 65535, not \(port)") }
    }

    func run() async throws {
        let dataDir = global.dir
        let keg = try Keg(dataDir: dataDir)
        let token = try AdminToken.loadOrCreate(in: dataDir)
        var logger = Logger(label: "kbuild")
        logger.logLevel = ProcessInfo.processInfo.environment["KBUILD_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning

        let refs = try global.openRefs()
        let server = KbuildHTTP.server(keg: keg, refs: refs, tokens: [token], host: host, port: port, logger: logger) { url in
            try? Data((url + "\n").utf8).write(to: dataDir.serverURLFile, options: .atomic)
            say("kbuild up: data dir \(dataDir.root.path) (admin token in \(dataDir.adminToken.path))")
            say("keg       \(url)/v1/objects/")
            say("registry  \(url.replacingOccurrences(of: "http://", with: ""))/ (stacks as stacks/NAME:latest)")
        }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: server)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        defer { try? FileManager.default.removeItem(at: dataDir.serverURLFile) }
        try await group.run()
    }
}
