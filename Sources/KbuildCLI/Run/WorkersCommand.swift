import ArgumentParser
import Foundation
import KbuildClient
import KbuildCore
import KbuildState
import KbuildSystem
import Keg
import KegRemote
import Logging
import Sandbox

/// `kbuild worker`: a build worker on its own, beside (or instead of) the one
/// in `kbuild up` (sharing its data dir), or on another machine with `--join`
/// (a data dir of its own; the control plane reached over HTTP only).
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a build worker: claim queued builds and run them until SIGINT/SIGTERM.",
        discussion: """
            On another machine: kbuild worker --join URL --token TOKEN --name NAME (kbuild workers:join-token NAME prints it). \
            The worker fetches each build's inputs from the control plane into its own data dir, runs the build in its sandbox, \
            sends the log as it grows and the layers it made, and claims builds as NAME only.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "The control plane to join (its API URL); the worker then uses the network only, never the control plane's files.")
    var join: String?
    @Option(help: "The worker's join token (with --join; kbuild workers:join-token NAME makes one). Default: $KBUILD_JOIN_TOKEN.")
    var token: String?
    @Option(help: "The hash of the control plane's CA (sha256:…), which an https --join URL's certificate must chain to (the join command names it).")
    var caHash: String?
    @Option(help: "The worker's name (with --join: the one its token was made for).") var name: String?

    var joinToken: String? { token ?? ProcessInfo.processInfo.environment["KBUILD_JOIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } }

    func validate() throws {
        if let name, !Names.isAppName(name) {
            throw ValidationError("invalid worker name \(name.debugDescription): a-z, 0-9 and '-', starting with a letter")
        }
        if let join {
            guard name != nil else { throw ValidationError("--join needs --name NAME, the worker its token was made for") }
            try ControlPlaneJoin.validate(join: join, token: joinToken, caHash: caHash, hint: "kbuild workers:join-token \(name!)")
        } else if token != nil || caHash != nil {
            throw ValidationError("--token and --ca-hash are for joining: they need --join URL")
        }
    }

    func run() async throws {
        var logger = Logger(label: "kbuild-worker")
        logger.logLevel = .warning
        var system = KbuildSystem(logger: logger) { say($0) }
        if let join, let token = joinToken, let name {
            // A machine of its own: its Keg holds the inputs it fetched and what it built; the rest is the control plane's API.
            try global.dir.create()
            let keg = try Keg(dataDir: global.dir)
            let client = try await ControlPlaneJoin.connect(join: join, token: token, caHash: caHash, dataDir: global.dir,
                                                           what: "build worker \(name)", actor: name)
            let worker = system.startBuildWorker(
                keg: keg, refs: RemoteRefStore(client: client), sandbox: try Sandbox(warmHelpers: 1), name: name,
                remote: BuildWorkerRemote(records: RemoteRecords(client: client, cache: keg),
                                          upstream: KegRemote(baseURL: URL(string: client.base)!, token: token, client: client.http),
                                          liveLog: client))
            say("kbuild worker \(worker.builder.worker): joined \(client.base); builds in \(global.dir.root.path)")
        } else {
            let worker = system.startBuildWorker(keg: try global.openKeg(), refs: try global.openRefs(), sandbox: try Sandbox(warmHelpers: 1), name: name)
            say("kbuild worker \(worker.builder.worker): waiting for builds in \(global.dir.root.path)")
        }
        try await system.run()
    }
}

/// `kbuild workers:join-token NAME`: the token a build worker on another machine joins with.
struct WorkersJoinToken: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workers:join-token",
        abstract: "Make the token a build worker on another machine joins with (it may claim and run builds as that worker only).",
        discussion: "Prints the command to run on the worker's machine. Revoke the token with kbuild tokens:revoke worker-NAME."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The worker's name.") var worker: String

    func validate() throws {
        guard Names.isAppName(worker) else { throw ValidationError("invalid worker name \(worker.debugDescription): a-z, 0-9 and '-', starting with a letter") }
    }

    func run() async throws {
        let client = try global.client()
        let join = try await client.workerJoinToken(worker: worker)
        if let url = join.url, let hash = join.caHash {
            say("kbuild worker --join \(url) --ca-hash \(hash) --token \(join.token) --name \(join.worker)")
        } else {
            say("kbuild worker --join \(client.base) --token \(join.token) --name \(join.worker)")
        }
    }
}
