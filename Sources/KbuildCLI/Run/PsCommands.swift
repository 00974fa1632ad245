import ArgumentParser
import Cluster
import Foundation
import KbuildAPI
import KbuildClient
import KbuildCore
import NodeAgent
import Sandbox
import Trace
import KbuildState

/// `kbuild ps APP`.
struct PsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ps", abstract: "List an app's processes on every node (--all: every app's, with their chain).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String?
    @Flag(help: "Every process on every node: host PID, process KID, release and short commit (through the API from another machine: admin only).") var all = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard (app == nil) == all else { throw ValidationError(all ? "--all lists every app: give no app" : "give an app, or --all") }
    }

    func run() async throws {
        guard let app else { return try await listAll() }
        let list = try await global.client().processes(app)
        if json { return try printJSON(list) }
        guard !list.isEmpty else { return say("\(app) runs no processes") }
        for p in list {
            let pid = p.hostPID.map { "pid \($0)" } ?? "no pid"
            let restarts = p.restarts > 0 ? ", \(p.restarts) restarts" : ""
            say("\(p.name)  \(p.state.rawValue)  v\(p.release.map(String.init) ?? "-")  \(p.node)  \(pid)  port \(p.port.map { (p.address.map { a in "\(a):" } ?? "") + String($0) } ?? "-")  since \(shortDate(p.since))\(restarts)")
        }
    }
}

extension PsList {
    func listAll() async throws {
        let all: [API.RunningProcess]
        if let remote = try global.remoteClient() {
            all = try await remote.allProcesses()
        } else {
            all = try await Tracer(keg: try global.openKeg(), refs: try global.openRefs()).runningProcesses()
        }
        if json {
            return try printJSON(all.map { ["app": $0.app, "name": $0.name, "node": $0.node, "hostPID": String($0.hostPID),
                                           "process": $0.process.description, "release": "v\($0.release)", "commit": $0.commit ?? "-",
                                           "state": $0.state ?? ""] })
        }
        guard !all.isEmpty else { return say("no processes run") }
        for p in all {
            say("\(p.app).\(p.name)  \(p.state ?? "-")  node \(p.node)  host PID \(p.hostPID)  \(p.process.short)  v\(p.release)  \((p.commit ?? "-").prefix(7))")
        }
    }
}

/// `kbuild ps:scale APP web=3 worker=1`.
struct PsScale: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps:scale",
        abstract: "Set how many processes of each type run (a new release; nothing restarts).",
        discussion: "TYPE=COUNT[:MEMORY[:CPUS]], e.g. web=3, worker=0, web=2:1G:1. A formation that does not fit the nodes is refused, and what runs keeps running."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "TYPE=COUNT[:MEMORY[:CPUS]] changes.") var changes: [String]

    func validate() throws {
        guard !changes.isEmpty else { throw ValidationError("give at least one TYPE=COUNT, e.g. web=3") }
    }

    func run() async throws {
        let r = try await global.client().scale(app, changes)
        let now = r.processTypes.keys.sorted().map { "\($0)=\(r.formation[$0]?.quantity ?? 0)" }.joined(separator: " ")
        say("Scaled \(app) to \(now): v\(r.version)")
    }
}

/// `kbuild ps:restart APP [TYPE]`.
struct PsRestart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ps:restart", abstract: "Restart an app's processes (rolling, health-gated).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "Only this process type.") var type: String?

    func run() async throws {
        _ = try await global.client().restart(app, type: type)
        say("Restarting \(type.map { "\($0) processes of " } ?? "")\(app)")
    }
}

/// `kbuild down`: stops the app processes `kbuild up` left running.
struct DownCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "down",
        abstract: "Stop every app process this machine's node agents started.",
        discussion: "App processes outlive `kbuild up` (a restart or upgrade adopts them). Stop kbuild up first, then run this to stop them too."
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "Seconds between SIGTERM and SIGKILL.") var grace = 10

    func run() async throws {
        var total = 0
        for dir in global.dir.nodeDirectories() {
            total += await NodeAgent.stopAll(stateDir: dir, grace: .seconds(grace))
            // A node that was a host of its own (kbuild up --nodes N): its network goes too.
            if let data = FileManager.default.contents(atPath: dir + "/network.json"),
               let network = try? JSONDecoder().decode(NodeNetwork.self, from: data) {
                network.remove()
                try? FileManager.default.removeItem(atPath: dir + "/network.json")
            }
        }
        // The processes' network namespaces, and the firewall of those on the host.
        var networks = 0
        for slot in 0..<EgressNetwork.oneOffSlot {
            networks += await EgressNetwork(dataDir: global.dir.root.path, slot: slot).sweep(keep: [])
        }
        // One-off runs and builds: those a live process holds are its own to remove.
        networks += await EgressNetwork(dataDir: global.dir.root.path, slot: EgressNetwork.oneOffSlot).sweepUnheld()
        EgressNetwork(dataDir: global.dir.root.path, slot: 0).removeFirewall()
        // Build disks whose build was killed.
        _ = await ScratchDisk.sweep(directory: global.dir.root.path + "/builds/work")
        EgressNetwork.restoreForwarding()
        say("Stopped \(total) process\(total == 1 ? "" : "es")" + (networks > 0 ? "; removed \(networks) network namespaces" : ""))
    }
}


