import ArgumentParser
import Foundation
import KbuildClient
import KbuildCore
import KbuildState

/// `kbuild nodes`: every node agent that registered, whether it is alive, and what it holds.
struct NodesList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "nodes", abstract: "List the nodes: address, capacity, processes, last heartbeat.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let nodes = try await global.client().nodes()
        if json { return try printJSON(nodes) }
        guard !nodes.isEmpty else { return say("no node agent has registered (kbuild up starts one; kbuild agent starts more)") }
        let now = Date()
        for n in nodes {
            let heartbeat = n.heartbeat.map { "heartbeat \(Int(now.timeIntervalSince($0).rounded()))s ago" } ?? "no heartbeat"
            say("\(n.record.name)  \(n.alive ? "alive" : "silent")\(n.draining ? " (drained)" : "")  \(n.record.address)  \(formatMemory(n.record.capacity.memory)) \(n.record.capacity.cpus) CPUs  \(n.processes) processes  \(heartbeat)")
        }
    }
}

/// `kbuild nodes:join-token NODE`: the token a node agent on another machine joins with.
struct NodesJoinToken: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodes:join-token",
        abstract: "Make the token a node agent on another machine joins with (it may act as that node only).",
        discussion: "Prints the command to run on the node's machine: the https URL and the hash of the CA that pins it. Revoke the token with kbuild tokens:revoke node-NODE."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The node's name.") var node: String
    @Option(help: "The address the node serves its processes at (the router sends them requests there): the only one it may register.")
    var address: String?

    func validate() throws {
        guard Names.isAppName(node) else { throw ValidationError("invalid node name \(node.debugDescription): a-z, 0-9 and '-', starting with a letter") }
    }

    func run() async throws {
        let client = try global.client()
        let join = try await client.joinToken(node: node, address: address)
        let at = address.map { " --address \($0)" } ?? ""
        if let url = join.url, let hash = join.caHash {
            say("kbuild agent --join \(url) --ca-hash \(hash) --token \(join.token) --name \(join.node)\(at)")
        } else {
            say("kbuild agent --join \(client.base) --token \(join.token) --name \(join.node)\(at)")
        }
    }
}

/// `kbuild nodes:drain NODE`: take a node out of placement; what runs there moves, as a rollout moves it.
struct NodesDrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodes:drain",
        abstract: "Take a node out of placement: nothing new goes there, and its processes move to other nodes.",
        discussion: "Each moves as a rollout moves it: a new process healthy elsewhere first, then the old one stopped. Undo with kbuild nodes:undrain NODE."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The node's name.") var node: String

    func run() async throws {
        _ = try await global.client().drain(node: node)
        say("Drained \(node): its processes move to other nodes (kbuild ps shows them)")
    }
}

struct NodesUndrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "nodes:undrain", abstract: "Put a drained node back into placement.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The node's name.") var node: String

    func run() async throws {
        try await global.client().undrain(node: node)
        say("Undrained \(node): new processes may be placed there again")
    }
}
