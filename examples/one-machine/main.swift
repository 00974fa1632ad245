// A deployment of kbuild built from the library, as a user would write one:
// the same start functions `kbuild up` uses, chosen and wired here by hand.
// This one runs the API and git server, one build worker, the scheduler
// with a cautious rollout policy, two node agents on this host (each offering
// 1 CPU and 2 GiB, each process in a network namespace of its own with NAT
// egress only), and the router (port 8090 unless given).
//
//   swift run kbuild-example-one-machine /tmp/kbuild-example [API-PORT [ROUTER-PORT]]
//
// Then use the CLI against it: kbuild --data-dir /tmp/kbuild-example stack create busybox, apps:create …
import Foundation
import Cluster
import KbuildCore
import KbuildSystem
import Keg
import Logging
import NodeAgent
import KbuildState
import SQLiteState
import Sandbox
import Scheduler

func main() async throws {
    let args = Array(CommandLine.arguments.dropFirst())
    let root = args.first ?? NSTemporaryDirectory() + "kbuild-example"
    let apiPort = args.count > 1 ? Int(args[1]) ?? 7090 : 7090
    let routerPort = args.count > 2 ? Int(args[2]) ?? 8090 : 8090
    let dataDir = DataDir(root: URL(fileURLWithPath: root))
    try dataDir.create()
    let keg = try Keg(dataDir: dataDir)
    let refs = try SQLiteRefStore(path: dataDir.refStore.path)
    // Hooks run the kbuild CLI: the one built beside this program.
    let kbuild = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("kbuild").path

    var logger = Logger(label: "kbuild-example")
    logger.logLevel = .notice
    var system = KbuildSystem(logger: logger)
    try await system.startServer(keg: keg, refs: refs, dataDir: dataDir, kbuild: kbuild, host: "127.0.0.1", port: apiPort, sandbox: try Sandbox()) { url in
        try? Data((url + "\n").utf8).write(to: dataDir.serverURLFile, options: .atomic)
        print("API, git and registry at \(url)")
    }
    system.startBuildWorker(keg: keg, refs: refs, sandbox: try Sandbox(warmHelpers: 1))
    // Never below the desired count, one new process at a time, 30 s to become healthy.
    system.startScheduler(keg: keg, refs: refs, policy: RolloutPolicy(maxSurge: 1, maxUnavailable: 0, crashLoopRestarts: 3, startTimeout: 30)) { print($0) }
    for (slot, name) in ["a", "b"].enumerated() {
        var config = NodeAgentConfig(name: name, capacity: Resources(memory: 2 << 30, cpus: 1), stateDir: dataDir.node(name).path)
        // Each node its own slot of process addresses.
        config.egress = EgressNetwork(dataDir: dataDir.root.path, slot: slot)
        system.startNodeAgent(config, keg: keg, refs: refs, sandbox: try Sandbox())
    }
    system.startRouter(keg: keg, refs: refs, host: "127.0.0.1", port: routerPort) { port in print("apps at http://APP.localhost:\(port)/") }
    try await system.run()
}

try await main()
