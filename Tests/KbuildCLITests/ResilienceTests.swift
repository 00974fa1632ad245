import Foundation
import XCTest

/// Faults in one part of `kbuild up` while the rest serves: a lost build
/// claim, malformed queue records, pushes whose clients went away.
final class ResilienceTests: XCTestCase {
    func healthz(_ url: String) -> (ok: Bool, seconds: Double) {
        let started = Date()
        let r = try? sh("/usr/bin/curl", ["-sf", "--max-time", "5", url + "/healthz"])
        return (r?.status == 0, Date().timeIntervalSince(started))
    }

    /// The processes of this data dir's pushes: git http-backend, receive-pack, the hook.
    func pushProcesses(_ data: String) -> [String] {
        var found: [String] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(name), let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
                  env.split(separator: 0).contains(where: { $0.elementsEqual(Array("KBUILD_DATA_DIR=\(data)".utf8)) }),
                  let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
            let line = cmd.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
            if line.contains("http-backend") || line.contains("receive-pack") || line.contains("hook pre-receive") { found.append("\(pid) \(line)") }
        }
        return found
    }

    /// Processes whose command line holds `marker` (the slow build's sleep).
    func processes(with marker: String) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { name in
            guard Int32(name) != nil, let cmd = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { return false }
            return String(decoding: cmd, as: UTF8.self).contains(marker)
        }.count
    }

    /// A slow in-tree buildpack: compile sleeps `seconds` (the marker finds its sleep).
    func slowApp(_ name: String, data: String, seconds: Int, marker: String) throws -> String {
        try makeApp(name, data: data, files: [
            ".buildpacks": "./bp\n", "Procfile": "web: ./serve.sh\n", "id.txt": UUID().uuidString,
            "bp/bin/detect": "#!/bin/sh\necho Slow\n",
            "bp/bin/compile": "#!/bin/sh\necho '-----> Compiling slowly'\nsh -c 'sleep \(seconds); :' slow-\(marker)\necho '-----> Compiled'\n",
        ])
    }

    /// 20 pushes whose clients hang up while building or queued: each ends
    /// whole (no git or hook process is left, no build runs for it but the
    /// worker's, nothing deploys), and
    /// `/healthz` answers within a second all along.
    func testAbandonedPushesEndWholeWhileTheServerAnswers() throws {
        let data = try makeData("abandon")
        let server = try startKbuildUp(self, data: data)
        let marker = String(Int.random(in: 100_000...999_999))
        var works: [String] = []
        for i in 0..<20 {
            let work = try slowApp("slow\(i)", data: data, seconds: 120, marker: marker)
            // bp/bin/* must be executable in git.
            try git(["update-index", "--chmod=+x", "bp/bin/detect", "bp/bin/compile"], in: work)
            try git(["commit", "-q", "-m", "x"], in: work)
            works.append(work)
        }
        // Each push in a process group of its own, so git and its remote helper hang up together.
        var pushes: [pid_t] = []
        let logs = try tempDir(self, "abandon-logs")
        for (i, work) in works.enumerated() {
            pushes.append(try spawnGroup("/usr/bin/git", ["-C", work, "push", "kbuild", "main"], output: logs + "/\(i).log"))
        }
        addTeardownBlock { for p in pushes { kill(-p, SIGKILL); _ = reap(p) } }
        // One builds on kbuild up's worker; the others wait in the queue, and their pushers are told.
        try waitUntil("every push is building or told it waits", timeout: 90) {
            (0..<20).allSatisfy { i in
                let log = (try? String(contentsOfFile: logs + "/\(i).log", encoding: .utf8)) ?? ""
                return log.contains("Compiling slowly") || log.contains("No build worker has taken build")
            }
        }
        XCTAssertEqual(pushProcesses(data).filter { $0.contains("hook pre-receive") }.count, 20)
        for p in pushes { kill(-p, SIGKILL) }
        for p in pushes { _ = reap(p) }
        pushes = []
        // While the server finds out (git's keepalives), health checks stay fast.
        var times: [Double] = []
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline && !pushProcesses(data).isEmpty {
            let h = healthz(server.url)
            XCTAssertTrue(h.ok)
            times.append(h.seconds)
            usleep(100_000)
        }
        XCTAssertEqual(pushProcesses(data), [], "every abandoned push ended: no http-backend, receive-pack or hook is left")
        times.sort()
        XCTAssertFalse(times.isEmpty)
        XCTAssertLessThan(times.last ?? 0, 1.0, "every /healthz within 1 s (max of \(times.count))")
        // Only the worker's build runs (memoised for the next push). The control plane finds each hook gone at its
        // next keepalive and takes the builds no worker started off the queue: only the running one is left.
        try waitUntil("no build runs but the worker's", timeout: 10) { self.processes(with: "slow-" + marker) <= 1 }
        try waitUntil("the abandoned pushes' builds left the queue", timeout: 10) {
            let queued = try kbuild(["ref", "ls", "builds/queue"], dataDir: data)
            return queued.status == 0 && queued.stdout.split(separator: "\n").count <= 1
        }
        try waitUntil("the hooks' build disks are gone", timeout: 25) {
            ((try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.contains(data) }.count <= 1
        }
        for i in 0..<20 {
            XCTAssertNotEqual(try kbuild(["ref", "get", "apps/slow\(i)/release"], dataDir: data).status, 0, "slow\(i) deployed nothing")
        }
        // One deploy per app at a time: a second push to a busy app is told at once.
        let busy = try slowApp("busy", data: data, seconds: 8, marker: marker)
        try git(["update-index", "--chmod=+x", "bp/bin/detect", "bp/bin/compile"], in: busy)
        try git(["commit", "-q", "-m", "x"], in: busy)
        let first = try spawnGroup("/usr/bin/git", ["-C", busy, "push", "kbuild", "main"], output: logs + "/busy.log")
        try waitUntil("the first push is deploying", timeout: 60) {
            ((try? String(contentsOfFile: logs + "/busy.log", encoding: .utf8)) ?? "").contains(" queued")
        }
        let second = try git(["push", "kbuild", "main:other-then-main", "--force"], in: busy)  // another branch is not a deploy
        XCTAssertEqual(second.status, 0, second.stderr)
        let again = try git(["push", "kbuild", "HEAD:main"], in: busy)
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("another push to busy is being built and deployed"), again.stderr)
        // (The first waits behind the worker's 120 s build: it is not awaited.)
        kill(-first, SIGKILL)
        _ = reap(first)
    }

    /// A claim taken from under a running build, and malformed queue records:
    /// the worker reports them and goes on; the API, git and the router never stop.
    func testAFaultInOnePartLeavesTheOthersServing() throws {
        let data = try makeData("faults")
        let server = try startKbuildUp(self, data: data)
        // Malformed entries under builds/queue and builds/claims: a name that is no KID, a record that is no job.
        let junk = try tempDir(self, "junk") + "/junk.txt"
        try Data("not a job\n".utf8).write(to: URL(fileURLWithPath: junk))
        let put = try kbuild(["keg", "put", junk], dataDir: data)
        XCTAssertEqual(put.status, 0, put.stderr)
        let junkKID = try XCTUnwrap(put.stdout.split(whereSeparator: \.isWhitespace).first { $0.hasPrefix("K-") }.map(String.init), put.stdout)
        for ref in ["builds/queue/not-a-kid", "builds/queue/" + String(repeating: "1", count: 64), "builds/claims/" + String(repeating: "2", count: 64)] {
            let set = try kbuild(["ref", "set", ref, junkKID], dataDir: data)
            XCTAssertEqual(set.status, 0, set.stderr)
        }
        // A slow build: once it compiles, its claim is replaced (as another worker taking it over would).
        let marker = String(Int.random(in: 100_000...999_999))
        let work = try slowApp("slow", data: data, seconds: 30, marker: marker)
        try git(["update-index", "--chmod=+x", "bp/bin/detect", "bp/bin/compile"], in: work)
        try git(["commit", "-q", "-m", "x"], in: work)
        let logs = try tempDir(self, "fault-logs")
        let push = try spawnGroup("/usr/bin/git", ["-C", work, "push", "kbuild", "main"], output: logs + "/push.log")
        addTeardownBlock { kill(-push, SIGKILL) }
        try waitUntil("compiling", timeout: 60) { self.processes(with: "slow-" + marker) > 0 }
        let claims = try kbuild(["ref", "ls", "builds/claims"], dataDir: data).stdout
        let claim = try XCTUnwrap(claims.split(separator: "\n").map { String($0.split(separator: " ").last ?? "") }
            .first { !$0.hasSuffix(String(repeating: "2", count: 64)) }, claims)
        XCTAssertEqual(try kbuild(["ref", "set", claim, junkKID], dataDir: data).status, 0)
        // The worker loses the claim at its next renewal (within 5 s) and cancels only that build.
        try waitUntil("the build is cancelled", timeout: 20) { self.processes(with: "slow-" + marker) == 0 }
        _ = reap(push)
        // Everything else goes on: the server, the router, a new push is built by the same worker.
        XCTAssertTrue(server.process.isRunning, "kbuild up is still running")
        for _ in 0..<10 {
            XCTAssertTrue(healthz(server.url).ok)
            usleep(200_000)
        }
        let next = try makeApp("next", data: data)
        let pushed = try git(["push", "kbuild", "main"], in: next)
        XCTAssertEqual(pushed.status, 0, pushed.stderr)
        XCTAssertFalse(pushed.stderr.contains("building here"), "the worker built it, not the hook: \(pushed.stderr)")
        XCTAssertTrue(pushed.stderr.contains("is live"), pushed.stderr)
    }
}

/// Starts a program as the leader of a new process group (stdio to `output`); the caller reaps it.
func spawnGroup(_ path: String, _ args: [String], output: String) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
    posix_spawnattr_setpgroup(&attributes, 0)
    let argv = ([path] + args).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var environment = ProcessInfo.processInfo.environment
    environment["GIT_TERMINAL_PROMPT"] = "0"
    environment.removeValue(forKey: "KBUILD_DATA_DIR")
    let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { envp.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
    guard rc == 0 else { throw NSError(domain: NSPOSIXErrorDomain, code: Int(rc)) }
    return pid
}

/// What one client or one app can hold of the host: connections, log space.
final class LimitsTests: XCTestCase {
    /// A TCP connection to 127.0.0.1:port (nil if refused).
    func connect(_ port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
        if !ok { close(fd); return nil }
        return fd
    }

    /// Whether the server closed `fd` (a read sees EOF or a reset within `seconds`).
    func closedByServer(_ fd: Int32, within seconds: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, seconds * 1000) == 1 else { return false }
        var byte: UInt8 = 0
        return read(fd, &byte, 1) <= 0
    }

    func testIdleAndSlowConnectionsCannotHoldTheAPI() throws {
        let data = try makeData("conns")
        let server = try startKbuildUp(self, data: data)
        let port = try XCTUnwrap(URL(string: server.url)?.port)
        // 1,100 connections that say nothing: the server still answers.
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for _ in 0..<1100 { if let fd = connect(port) { idle.append(fd) } }
        XCTAssertGreaterThan(idle.count, 1000)
        let started = Date()
        let health = try sh("/usr/bin/curl", ["-sf", "--max-time", "5", server.url + "/healthz"])
        XCTAssertEqual(health.status, 0, "the API answers beside 1,100 idle connections")
        XCTAssertLessThan(Date().timeIntervalSince(started), 2)
        // A request head sent a byte at a time, never finished: closed after the header timeout (15 s), as the idle ones are.
        let slow = try XCTUnwrap(connect(port))
        defer { close(slow) }
        _ = "GET /healthz HTTP/1.1\r\nHost: x\r\n".withCString { write(slow, $0, strlen($0)) }
        XCTAssertTrue(closedByServer(slow, within: 25), "a head never finished is closed")
        XCTAssertTrue(closedByServer(idle[0], within: 5), "so is a connection that never said anything")
        XCTAssertEqual(try sh("/usr/bin/curl", ["-sf", "--max-time", "5", server.url + "/healthz"]).status, 0)
    }

    /// A process that writes as fast as it can keeps its log under its cap,
    /// the newest lines kept and the drop noted; what a build makes setuid is
    /// stored without the bit.
    func testLogsAreCappedAndSetuidBitsDropped() throws {
        let data = try makeData("logcap")
        _ = try startKbuildUp(self, data: data, extra: ["--process-log-cap", "1M", "--app-log-cap", "3M"])
        let work = try makeApp("chatty", data: data, serve: """
            #!/bin/sh
            (i=0; while :; do i=$((i+1)); echo "line $i of a chatty process, padded to be a little longer than most lines are"; done) &
            exec busybox httpd -f -p "0.0.0.0:$PORT" -h www
            """, files: [
                ".buildpacks": "./bp\n",
                "bp/bin/detect": "#!/bin/sh\necho Setuid\n",
                "bp/bin/compile": "#!/bin/sh\ncp /bin/busybox \"$1/suid\" && chmod 4755 \"$1/suid\" && ls -l \"$1/suid\"\n",
            ])
        try git(["update-index", "--chmod=+x", "bp/bin/detect", "bp/bin/compile"], in: work)
        try git(["commit", "-q", "-m", "x"], in: work)
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stderr.contains("rwsr-xr-x"), "the build made it setuid: \(push.stderr)")
        // Stored without the bit: nothing setuid in the file cache, and the process sees 0755.
        let setuid = try sh("/usr/bin/find", [data + "/keg/files", "-perm", "-4000", "-type", "f"])
        XCTAssertEqual(trimmed(setuid.stdout), "", "no setuid file in the shared cache")
        let mode = try sh(kbuildBinary, ["run", "chatty", "--", "stat", "-c", "%a", "/app/suid"], env: ["KBUILD_DATA_DIR": data])
        XCTAssertEqual(trimmed(mode.stdout).count, 3, "no setuid, setgid or sticky bit: \(mode.stdout) \(mode.stderr)")

        let logs = data + "/nodes/local/logs"
        try waitUntil("the cap was reached and applied", timeout: 60) {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: logs)) ?? []
            return files.contains { name in
                ((try? String(contentsOfFile: logs + "/" + name, encoding: .utf8)) ?? "").contains("dropped the oldest")
            }
        }
        for _ in 0..<5 {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: logs)) ?? [] {
                let size = (try FileManager.default.attributesOfItem(atPath: logs + "/" + name)[.size] as? UInt64) ?? 0
                XCTAssertLessThan(size, (1 << 20) + (64 << 10), "\(name) stays under its 1 MiB cap (and a block)")
            }
            usleep(500_000)
        }
        // The newest lines are there, through kbuild logs.
        let tail = try kbuild(["logs", "chatty", "--lines", "3"], dataDir: data)
        XCTAssertEqual(tail.status, 0, tail.stderr)
        let numbers = tail.stdout.split(separator: "\n").compactMap { line -> Int? in
            guard let r = line.range(of: "line ") else { return nil }
            return Int(line[r.upperBound...].prefix { $0.isNumber })
        }
        XCTAssertFalse(numbers.isEmpty, tail.stdout)
        XCTAssertGreaterThan(numbers.max() ?? 0, 10_000, "lines long past the first megabyte: \(tail.stdout)")
    }
}
