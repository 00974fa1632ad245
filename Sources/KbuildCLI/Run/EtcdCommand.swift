import ArgumentParser
import EtcdState
import Foundation
import KbuildCore
import Logging
import ServiceLifecycle

/// `kbuild etcd`: a local etcd of 1 or 3 members (Debian's etcd-server) for
/// trying `kbuild up --state etcd://…` on one machine. On many machines, run
/// etcd there as the README's "Many machines" says.
struct EtcdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etcd",
        abstract: "Run a local etcd cluster (1 or 3 members) for kbuild up --state, until SIGINT/SIGTERM.",
        discussion: """
            Members listen on 127.0.0.1 (or --host): clients on --client-port and up (2379, 2380, 2381), peers on --peer-port and up (2479…).
            Their data stays in --dir (default DATA/etcd), so a restart keeps the state. Prints the --state value to use.
            """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: "Members to run (1 or 3; 3 survives the loss of one).")
    var members = 1

    @Option(help: "Address the members listen on.")
    var host = "127.0.0.1"

    @Option(help: "The first member's client port (the others take the next ones).")
    var clientPort = 2379

    @Option(help: "The first member's peer port (the others take the next ones; default: the client port plus 100).")
    var peerPort: Int?

    @Option(help: "Where the members keep their data (default DATA/etcd).")
    var dir: String?

    func validate() throws {
        guard [1, 3, 5].contains(members) else { throw ValidationError("--members must be 1, 3 or 5, not \(members)") }
        guard (1...65535 - members).contains(clientPort), (1...65535 - members).contains(peers) else {
            throw ValidationError("--client-port and --peer-port must be ports")
        }
        guard abs(clientPort - peers) >= members else { throw ValidationError("--client-port and --peer-port ranges overlap") }
    }

    var peers: Int { peerPort ?? clientPort + 100 }

    func run() async throws {
        let directory = dir ?? global.dir.root.appendingPathComponent("etcd").path
        let etcd = LocalEtcd(dir: directory, members: members, host: host, clientPort: clientPort, peerPort: peers)
        try etcd.start()
        do {
            try await etcd.waitReady()
        } catch {
            etcd.stop()
            throw error
        }
        say("etcd      \(members) member\(members == 1 ? "" : "s") ready, data in \(directory)")
        say("state     kbuild up --state \(etcd.spec)")
        var logger = Logger(label: "kbuild-etcd")
        logger.logLevel = .warning
        let group = ServiceGroup(configuration: .init(services: [.init(service: Members(etcd: etcd))],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// Holds the members until shutdown, then stops them.
    struct Members: Service {
        let etcd: LocalEtcd
        func run() async throws {
            try? await gracefulShutdown()
            etcd.stop()
        }
    }
}
