// trace-bench: `kbuild trace PID` on a large store, for benchmarks/trace.sh.
// Builds a data dir with one app of N releases (each a deploy of its own
// commit, with its source record and build), M process records and a node
// report listing the M processes, one of which is a real process (a `sleep`
// this program starts), then runs `kbuild trace PID` R times and prints the
// median and p99 wall time (process start included), and the same for
// `kbuild trace APP@vN`; then `kbuild trace PID` through the API of a
// `kbuild up` on the same data dir, with the ratio. With `--apps N` the releases and processes are
// spread over N apps (app0, app1, …); `--setup-only` makes the store and stops
// (benchmarks/remote_cli.py times the CLI itself).
//
//   trace-bench KBUILD DATA-DIR [--releases 10000] [--processes 1000] [--runs 50] [--apps 1] [--setup-only]
import Builds
import Cluster
import Foundation
import KbuildCore
import Keg
import KbuildState
import SQLiteState
import Releases

func arg(_ name: String, _ fallback: Int) -> Int {
    guard let i = CommandLine.arguments.firstIndex(of: name), i + 1 < CommandLine.arguments.count else { return fallback }
    return Int(CommandLine.arguments[i + 1]) ?? fallback
}

/// Progress without a newline, at once.
func progress(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

struct BenchFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

func main() async throws {
    let args = CommandLine.arguments
    guard args.count >= 3 else {
        FileHandle.standardError.write(Data("usage: trace-bench KBUILD DATA-DIR [--releases N] [--processes N] [--runs N] [--apps N] [--setup-only]\n".utf8))
        exit(2)
    }
    let kbuild = args[1]
    let dataDir = DataDir(root: URL(fileURLWithPath: args[2]))
    let (releases, processes, runs, appCount) = (arg("--releases", 10_000), arg("--processes", 1_000), arg("--runs", 50), max(1, arg("--apps", 1)))
    let setupOnly = args.contains("--setup-only")
    try dataDir.create()
    let keg = try Keg(dataDir: dataDir)
    let refs = try SQLiteRefStore(path: dataDir.refStore.path)
    let apps = appCount == 1 ? ["bench"] : (0..<appCount).map { "app\($0)" }
    for app in apps {
        let record = AppRecord(name: app, stack: "busybox", createdBy: "bench")
        _ = try await refs.compareAndSwap(try Schema.app(app), to: try Records.put(record, in: keg), expecting: .any, actor: "bench")
    }

    progress("making \(apps.count) apps, \(releases) releases and \(processes) process records")
    let store = ReleaseStore(keg: keg, refs: refs)
    var lastOf: [String: ReleaseEntry] = [:]
    for v in 0..<releases {
        let app = apps[v % apps.count]
        let commit = String(format: "%040x", v + 1)
        let tree = try keg.putBlob(Array("tree \(v)".utf8))
        let source = SourceRecord(app: app, source: tree, commit: commit, author: "Bench", authorEmail: "bench@example.com", message: "commit \(v)",
                                  committedAt: Date(), pushedBy: "bench", pushedAt: Date(), ref: "refs/heads/main", repository: "http://bench/\(app).git",
                                  files: 1, bytes: 1)
        let sourceKID = try await Records.put(source, in: keg)
        try await refs.set(try Schema.commit(commit), to: sourceKID, actor: "bench")
        let image = try keg.putBlob(Array("image \(v)".utf8))
        lastOf[app] = try await store.deploy(app: app, image: image, processTypes: ["web": "serve"], healthchecks: [:], sourceRecord: sourceKID,
                                      build: KID(hashing: Data("build \(v)".utf8)), commit: commit, actor: "bench")
        if v % 1000 == 999 { progress(".") }
    }
    guard let release = lastOf[apps[(releases - 1) % apps.count]] else { return }
    let app = release.release.app
    // A real process for the PID: trace finds it as the sandbox's PID 1 of one of the records.
    // (Not with --setup-only: a status entry must not name a PID that dies with this program and may be reused.)
    let sleeper = Process()
    sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
    sleeper.arguments = ["600"]
    if !setupOnly { try sleeper.run() }
    defer { if !setupOnly { sleeper.terminate() } }
    var statuses: [ProcessStatus] = []
    for i in 0..<processes {
        let pid = i == processes / 2 && !setupOnly ? sleeper.processIdentifier : Int32(4_000_000 + i)
        // Round-robin over the apps that have a release; the PID's process belongs to the last deployed app.
        let app = i == processes / 2 ? app : apps[i % min(apps.count, releases)]
        let release = lastOf[app]!
        let spec = ProcessSpec.of(release.release, type: "web", generation: 0)!
        let id = "\(app).web.\(i + 1)-bench"
        let record = ProcessRecord(id: id, node: "local", hostPID: pid, app: app, name: "web.\(i + 1)", release: release.kid, version: release.version,
                                   spec: spec, port: 20000 + i, startedAt: Date())
        let kid = try await Records.put(record, in: keg)
        try await refs.set(try Schema.processes(app), to: kid, actor: "bench")
        statuses.append(ProcessStatus(id: id, app: app, type: "web", name: "web.\(i + 1)", state: .healthy, process: kid, hostPID: pid,
                                      port: 20000 + i, restarts: 0, lastExit: nil, since: Date()))
    }
    let node = NodeRecord(name: "local", address: "127.0.0.1", capacity: Resources(memory: 1 << 40, cpus: 1000), network: "host", agentPID: getpid())
    try await refs.set(try Schema.node("local"), to: try Records.put(node, in: keg), actor: "bench")
    // A long lease: the report stays "alive" while the benchmark runs.
    try await refs.set(try Schema.status("local"), to: try Records.put(NodeStatus(node: "local", at: Date(), lease: 3600, processes: statuses), in: keg),
                       actor: "bench")
    print(" done")
    if setupOnly { return }

    /// Times `kbuild ARGUMENTS` end to end: on this data dir, or through the API (`remote`: KBUILD_URL and KBUILD_TOKEN,
    /// no data dir, an empty HOME). Returns p50 and p99 in ms.
    @discardableResult
    func time(_ label: String, _ arguments: [String], expect: String, target: Double?, remote: (url: String, token: String, home: String)? = nil) throws
        -> (p50: Double, p99: Double) {
        var times: [Double] = []
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("KBUILD_") }
        if let remote {
            environment["KBUILD_URL"] = remote.url
            environment["KBUILD_TOKEN"] = remote.token
            environment["HOME"] = remote.home
            environment["XDG_CONFIG_HOME"] = ""
        }
        for run in -1..<runs {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: kbuild)
            p.arguments = arguments + (remote == nil ? ["--data-dir", dataDir.root.path] : [])
            p.environment = environment
            let out = Pipe()
            p.standardOutput = out
            let t0 = ContinuousClock.now
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            let d = ContinuousClock.now - t0
            // The first run is not counted (the server's caches, the page cache).
            if run >= 0 { times.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15) }
            guard p.terminationStatus == 0, String(decoding: data, as: UTF8.self).contains(expect) else {
                // Thrown, not exit(1): the kbuild up below is stopped and its firewall removed on the way out.
                throw BenchFailure(message: "\(label) failed: \(String(decoding: data, as: UTF8.self))")
            }
        }
        times.sort()
        let p50 = times[times.count / 2], p99 = times[min(times.count - 1, Int(Double(times.count) * 0.99))]
        let verdict = target.map { p99 <= $0 ? " (target p99 <= \(Int($0)) ms: met)" : " (target p99 <= \(Int($0)) ms: NOT met)" } ?? ""
        print("\(label): p50 \(String(format: "%.1f", p50)) ms, p99 \(String(format: "%.1f", p99)) ms over \(runs) runs\(verdict)")
        return (p50, p99)
    }
    let lastCommit = release.release.commit ?? ""
    let byPID = "(\(processes) processes, \(releases) releases)"
    let local = try time("kbuild trace PID \(byPID)", ["trace", String(sleeper.processIdentifier)], expect: lastCommit, target: 100)
    try time("kbuild trace \(app)@v\(releases / 2)", ["trace", "\(app)@v\(releases / 2)"], expect: "commit", target: nil)

    // The same through the API: `kbuild up` on this data dir (no nodes, no workers: nothing but the API runs),
    // the CLI with only its URL and a token, as on another machine (the PID is this machine's: the CLI sends its parents).
    let up = Process()
    up.executableURL = URL(fileURLWithPath: kbuild)
    up.arguments = ["up", "--data-dir", dataDir.root.path, "--port", "0", "--router-port", "0", "--tls-port", "0", "--nodes", "0", "--workers", "0"]
    up.standardOutput = FileHandle.nullDevice
    up.standardError = FileHandle.nullDevice
    try up.run()
    defer {
        up.terminate()
        up.waitUntilExit()
        // What kbuild up set up for the machine (its firewall table) goes with `kbuild down`, as after any kbuild up.
        let down = Process()
        down.executableURL = URL(fileURLWithPath: kbuild)
        down.arguments = ["down", "--grace", "1", "--data-dir", dataDir.root.path]
        down.standardOutput = FileHandle.nullDevice
        down.standardError = FileHandle.nullDevice
        try? down.run()
        down.waitUntilExit()
    }
    var url = ""
    for _ in 0..<600 where url.isEmpty {
        url = ((try? String(contentsOf: dataDir.serverURLFile, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        if url.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
    }
    guard !url.isEmpty, let token = try? String(contentsOf: dataDir.root.appendingPathComponent("admin.token"), encoding: .utf8) else {
        throw BenchFailure(message: "kbuild up did not start on \(dataDir.root.path)")
    }
    let home = NSTemporaryDirectory() + "trace-bench-home-\(getpid())"
    try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: home) }
    let remote = try time("kbuild trace PID \(byPID) through the API", ["trace", String(sleeper.processIdentifier)], expect: lastCommit, target: 100,
                          remote: (url, token.trimmingCharacters(in: .whitespacesAndNewlines), home))
    print("through the API / local: p50 \(String(format: "%.2f", remote.p50 / local.p50)), p99 \(String(format: "%.2f", remote.p99 / local.p99))")
}

try await main()
