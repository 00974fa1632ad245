import ArgumentParser
import Foundation
import KbuildCore
import Sandbox
import Stacks

/// `kbuild sandbox bench`: start-to-exit of /bin/true, kbuild's sandbox against
/// `runc run` of the same root filesystem, interleaved in one run.
struct SandboxBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmark: sandbox start-to-exit of /bin/true against runc on the same stack.",
        discussion: """
            Exports the stack as an OCI layout, unpacks it with umoci into a runc bundle, then runs /bin/true --runs times in each configuration, interleaved round by round: kbuild in-process (as the build worker and node agent start sandboxes) and `runc run` (as containerd starts containers), each with the host's network and with a new network namespace, and kbuild with an app process's egress network (namespace, veth, addresses and route made before the start and removed after it). kbuild's runs carry a memory and pids cgroup, as runc's do, and use warm helpers (two of each kind, started ahead and already in their cgroups, as a build worker or node agent keeps them); the one-off row starts with nothing ahead, as `sandbox run` does. Prints p50, p99 and the ratios.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "The stack to run on.") var stack = "busybox"
    @Option(help: "Runs per configuration.") var runs = 200
    @Option(help: "The runc binary.") var runc = "/usr/sbin/runc"
    @Flag(help: "JSON output.") var json = false

    func validate() throws {
        guard runs >= 10 else { throw ValidationError("--runs must be at least 10") }
    }

    struct Row: Encodable {
        var name: String
        var p50: Double
        var p99: Double
        var mean: Double
    }

    func run() async throws {
        let stacks = try global.openStacks()
        let found = try await stacks.find(stack)
        let lower = try stacks.lowerDirs(for: found)
        let work = global.dir.root.path + "/bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try stacks.images.exportLayout(found.image, to: work + "/layout", tag: stack)
        let bundleHost = work + "/bundle-host", bundleNet = work + "/bundle-netns"
        for (bundle, keepNetwork) in [(bundleHost, false), (bundleNet, true)] {
            try exec("/usr/bin/umoci", ["unpack", "--image", work + "/layout:" + stack, bundle])
            try editRuncConfig(bundle + "/config.json", keepNetworkNamespace: keepNetwork)
        }

        // As a build worker or node agent runs it: helpers started ahead, already in their cgroups.
        let sandbox = try Sandbox(warmHelpers: 2)
        // As `kbuild sandbox run` runs it: one start, nothing ahead.
        let oneOff = try Sandbox()
        let limits = SandboxLimits(memory: 256 << 20, pids: 1024)
        func spec(_ network: SandboxNetwork) -> SandboxSpec {
            SandboxSpec(command: ["/bin/true"], lowerDirs: lower, network: network, limits: limits, stdout: .discard, stderr: .discard)
        }
        var samples: [String: [Double]] = [:]
        let names = ["kbuild, host network", "runc, host network", "kbuild, new netns", "runc, new netns", "kbuild, one-off start",
                     "kbuild, egress netns"]
        // An app process's network: a namespace of its own with a veth and NAT egress, made and removed each run.
        let egress = EgressNetwork(dataDir: global.dir.root.path, slot: EgressNetwork.oneOffSlot - 1)
        try await egress.installFirewall()
        defer { egress.removeFirewall() }
        for round in 0..<runs {
            for name in names {
                let start = ContinuousClock.now
                switch name {
                case names[5]:
                    let link = try await egress.make(port: nil)
                    let result = try await sandbox.run(spec(.namespace("/run/netns/" + link.namespace)))
                    await egress.remove(link, port: nil)
                    guard result.termination == .exited(0) else { throw KbuildError(.io, "bench: /bin/true \(result.summary)") }
                case names[0], names[2], names[4]:
                    let result = name == names[4] ? try await oneOff.run(spec(.host)) : try await sandbox.run(spec(name == names[0] ? .host : .none))
                    guard result.termination == .exited(0) else { throw KbuildError(.io, "bench: /bin/true \(result.summary)") }
                default:
                    try exec(runc, ["run", "--bundle", name == names[1] ? bundleHost : bundleNet, "kbuild-bench-\(getpid())-\(round)"], quiet: true)
                }
                let d = ContinuousClock.now - start
                samples[name, default: []].append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
            }
        }
        let rows = names.map { name -> Row in
            let xs = samples[name]!.sorted()
            return Row(name: name, p50: xs[xs.count / 2], p99: xs[min(xs.count - 1, Int((Double(xs.count) * 0.99).rounded(.up)) - 1)],
                       mean: xs.reduce(0, +) / Double(xs.count))
        }
        if json { return try printJSON(rows) }
        print("sandbox start-to-exit of /bin/true on stack \(stack) (\(found.image.short)), \(runs) runs each, interleaved")
        print("configuration".padding(toLength: 24, withPad: " ", startingAt: 0) + "    p50 ms    p99 ms   mean ms")
        for row in rows {
            print(row.name.padding(toLength: 24, withPad: " ", startingAt: 0) + String(format: "%10.2f%10.2f%10.2f", row.p50, row.p99, row.mean))
        }
        print(String(format: "ratio kbuild/runc p50: host network %.3f, new netns %.3f (target <= 0.2)", rows[0].p50 / rows[1].p50, rows[2].p50 / rows[3].p50))
        print(String(format: "kbuild p99: host network %.2f ms, new netns %.2f ms (target <= 10)", rows[0].p99, rows[2].p99))
        print(String(format: "an app process's own network (namespace, veth, addresses, route; made and removed): +%.2f ms p50 over a new netns", rows[5].p50 - rows[2].p50))
    }

    /// umoci's config, made to run /bin/true without a terminal; host network or not.
    func editRuncConfig(_ path: String, keepNetworkNamespace: Bool) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard var config = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              var process = config["process"] as? [String: Any],
              var linux = config["linux"] as? [String: Any] else {
            throw KbuildError(.corrupt, "bench: \(path) is not a runc config")
        }
        process["args"] = ["/bin/true"]
        process["terminal"] = false
        config["process"] = process
        if !keepNetworkNamespace, let namespaces = linux["namespaces"] as? [[String: Any]] {
            linux["namespaces"] = namespaces.filter { $0["type"] as? String != "network" }
        }
        config["linux"] = linux
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: path))
    }

    /// posix_spawn and wait: the cheapest way to start a program, so runc is not charged for ours.
    func exec(_ path: String, _ arguments: [String], quiet: Bool = false) throws {
        var pid: pid_t = 0
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if quiet {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard rc == 0 else { throw KbuildError.syscall("posix_spawn", path, errno: rc, verb: "run \(path)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard status == 0 else { throw KbuildError(.io, "bench: \(path) \(arguments.joined(separator: " ")) failed with status \(status)") }
    }
}
