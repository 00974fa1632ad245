import KbuildCore
import Foundation

/// A local etcd cluster of 1 or 3 (or any number of) members on this
/// machine, each an `etcd` child process (Debian's `etcd-server`) with its
/// own data dir under `dir`: what `kbuild etcd` starts for trying
/// `--state etcd://…`, and what the tests start.
///
/// Each member's PID is written to `dir/<name>.pid`; `sweep(under:)` kills
/// the members of clusters whose owner process is gone (a test runner that
/// was killed with -9) and removes their dirs.
public final class LocalEtcd: @unchecked Sendable {
    public struct Member: Sendable {
        public let name: String
        public let clientURL: String
        public let peerURL: String
        public let dataDir: String
    }

    public let dir: String
    public let members: [Member]
    private let lock = NSLock()
    private var processes: [String: Process] = [:]
    /// Extra flags for every member (e.g. a shorter election timeout).
    public let flags: [String]

    /// The `--state` value naming every member.
    public var spec: String { "etcd://" + members.map { String($0.clientURL.dropFirst(7)) }.joined(separator: ",") }

    /// Members named m1…mN on `host`, clients on clientPort, clientPort+1, …, peers on peerPort, peerPort+1, ….
    public init(dir: String, members count: Int, host: String = "127.0.0.1", clientPort: Int, peerPort: Int, flags: [String] = []) {
        self.dir = dir
        self.flags = flags
        members = (0..<count).map { i in
            Member(name: "m\(i + 1)", clientURL: "http://\(host):\(clientPort + i)", peerURL: "http://\(host):\(peerPort + i)",
                   dataDir: dir + "/m\(i + 1)")
        }
    }

    public static var executable: String? {
        ["/usr/bin/etcd", "/usr/local/bin/etcd"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Starts every member (a member already running is left alone).
    public func start() throws {
        for m in members { try start(m.name) }
    }

    /// Starts one member; on a data dir it used before it rejoins with what it had.
    public func start(_ name: String) throws {
        guard let etcd = LocalEtcd.executable else {
            throw KbuildError(.notFound, "etcd is not installed: apt-get install etcd-server etcd-client")
        }
        guard let m = members.first(where: { $0.name == name }) else { throw KbuildError(.notFound, "no etcd member \(name)") }
        if lock.withLock({ processes[name]?.isRunning ?? false }) { return }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data("\(getpid())\n".utf8).write(to: URL(fileURLWithPath: dir + "/owner"))
        let cluster = members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: etcd)
        process.arguments = [
            "--logger=zap", "--log-outputs=\(dir)/\(m.name).log", "--name", m.name, "--data-dir", m.dataDir,
            "--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
            "--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
            "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "kbuild-" + (dir as NSString).lastPathComponent,
            // Lease expiry survives a leader change (3.4.23's name for it), and etcd compacts its own history:
            // kbuild keeps the refs' permanent history in keys of its own.
            "--experimental-enable-lease-checkpoint", "--auto-compaction-mode=revision", "--auto-compaction-retention=10000",
        ] + flags
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try Data("\(process.processIdentifier)\n".utf8).write(to: URL(fileURLWithPath: dir + "/\(m.name).pid"))
        lock.withLock { processes[name] = process }
    }

    /// kill -9 of one member (as a machine that dies).
    public func kill(_ name: String) {
        guard let p = lock.withLock({ processes.removeValue(forKey: name) }) else { return }
        Glibc.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    /// Stops every member (SIGTERM, then SIGKILL after 5 s).
    public func stop() {
        let all = lock.withLock { () -> [Process] in
            defer { processes = [:] }
            return Array(processes.values)
        }
        for p in all where p.isRunning { p.terminate() }
        let deadline = Date().addingTimeInterval(5)
        for p in all {
            while p.isRunning && Date() < deadline { usleep(20_000) }
            if p.isRunning { Glibc.kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
        }
    }

    /// Stops every member and removes their data.
    public func destroy() {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Waits until every running member answers and the cluster has a leader.
    public func waitReady(timeout: Duration = .seconds(30)) async throws {
        let client = try EtcdClient(spec)
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            do {
                let status = try await client.status()
                if let leader = status.leader, leader != "0" { return }
                last = "no leader yet"
            } catch {
                last = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw KbuildError(.io, "etcd at \(spec) was not ready within \(timeout): \(last); its logs are in \(dir)")
    }

    /// The member that leads now (asked of each member that answers), or nil.
    public func leader() async -> String? {
        for m in members {
            guard let client = try? EtcdClient(m.clientURL), let status = try? await client.status() else { continue }
            guard let leader = status.leader, leader != "0" else { continue }
            if status.header?.member_id == leader { return m.name }
        }
        return nil
    }

    /// Kills the members of every cluster under `base` whose owner process is gone, and removes their dirs.
    public static func sweep(under base: String) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: base) else { return }
        for entry in entries {
            let d = base + "/" + entry
            guard let owner = (try? String(contentsOfFile: d + "/owner", encoding: .utf8)).flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }),
                  Glibc.kill(owner, 0) != 0 && errno == ESRCH else { continue }
            for file in (try? FileManager.default.contentsOfDirectory(atPath: d)) ?? [] where file.hasSuffix(".pid") {
                if let pid = (try? String(contentsOfFile: d + "/" + file, encoding: .utf8)).flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }),
                   (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.hasPrefix("etcd") == true {
                    Glibc.kill(pid, SIGKILL)
                }
            }
            try? FileManager.default.removeItem(atPath: d)
        }
    }
}
