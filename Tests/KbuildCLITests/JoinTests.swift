import Foundation
import XCTest

/// Nodes on "other machines": a control plane (`kbuild up --nodes 0`), two
/// agents that joined it with `kbuild agent --join URL --token …`, each with
/// a data dir of its own, in a mount namespace where the control plane's data
/// dir is an empty tmpfs, and its processes in a network namespace of its own
/// reached over a veth pair; and the CLI as another machine runs it (only
/// KBUILD_URL and KBUILD_TOKEN, the data dir hidden too). The agent process
/// itself stays in the host's network namespace: the per-process networks it
/// makes route through the node's namespace from its parent, as `kbuild up
/// --nodes N` does; it reaches the control plane by its URL only.
final class JoinTests: XCTestCase {
    typealias Node = NetworkNode

    func ip(_ args: [String]) throws {
        let r = try sh("/usr/sbin/ip", args)
        XCTAssertEqual(r.status, 0, "ip \(args.joined(separator: " ")): \(r.stderr)")
    }

    /// A namespace with a veth to the host, as a machine of its own on a LAN would be; removed at teardown.
    func makeNode(_ index: Int) throws -> Node { try makeNetworkNode(index, tag: "kbj", subnet: "10.254.9\(index)") }

    /// `kbuild agent --join` with the control plane's data dir hidden; stopped at teardown (its processes by `kbuild down`).
    func startAgent(_ node: Node, join: [String], hiding controlPlane: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        let script = #"mount -t tmpfs -o size=1m,mode=0700 kbuild-hidden "$0" && exec "$@""#
        p.arguments = ["--mount", "--propagation", "private", "/bin/sh", "-c", script, controlPlane, kbuildBinary, "agent"] + join
            + ["--network", node.namespace, "--memory", "1G", "--data-dir", node.data]
        p.environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": node.data]
        XCTAssertTrue(FileManager.default.createFile(atPath: node.data + "/agent.log", contents: nil))
        let log = try XCTUnwrap(FileHandle(forWritingAtPath: node.data + "/agent.log"))
        p.standardOutput = log
        p.standardError = log
        try p.run()
        addTeardownBlock {
            if p.isRunning { kill(p.processIdentifier, SIGTERM) }
            p.waitUntilExit()
        }
        return p
    }

    /// `kbuild worker --join` with the control plane's data dir hidden, in a data dir of its own; stopped at teardown.
    func startWorker(_ name: String, join: [String], hiding controlPlane: String) throws -> (process: Process, data: String) {
        let dir = try tempDir(self, "join-\(name)")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        let script = #"mount -t tmpfs -o size=1m,mode=0700 kbuild-hidden "$0" && exec "$@""#
        p.arguments = ["--mount", "--propagation", "private", "/bin/sh", "-c", script, controlPlane, kbuildBinary, "worker"] + join + ["--data-dir", dir]
        p.environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": dir]
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/worker.log", contents: nil))
        let log = try XCTUnwrap(FileHandle(forWritingAtPath: dir + "/worker.log"))
        p.standardOutput = log
        p.standardError = log
        try p.run()
        addTeardownBlock {
            if p.isRunning { kill(p.processIdentifier, SIGTERM) }
            p.waitUntilExit()
            _ = try? sh(kbuildBinary, ["down", "--grace", "2", "--data-dir", dir])
        }
        return (p, dir)
    }

    /// The arguments of the join command `workers:join-token` prints (over https, pinned).
    func workerJoinCommand(_ name: String, data: String) throws -> [String] {
        let r = try kbuild(["workers:join-token", name], dataDir: data)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.hasPrefix("kbuild worker --join https://") && r.stdout.contains(" --ca-hash sha256:") &&
                      r.stdout.contains(" --token kbw_") && r.stdout.hasSuffix(" --name \(name)\n"), r.stdout)
        return Array(r.stdout.split(whereSeparator: \.isWhitespace).map(String.init).dropFirst(2))
    }

    /// The arguments of the join command `nodes:join-token` prints (over https, pinned by the CA's hash).
    func joinCommand(_ node: String, address: String? = nil, data: String) throws -> [String] {
        let r = try kbuild(["nodes:join-token", node] + (address.map { ["--address", $0] } ?? []), dataDir: data)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.hasPrefix("kbuild agent --join https://"), r.stdout)
        XCTAssertTrue(r.stdout.contains(" --ca-hash sha256:") && r.stdout.contains(" --token kbn_") &&
                      r.stdout.hasSuffix(" --name \(node)\(address.map { " --address \($0)" } ?? "")\n"), r.stdout)
        return Array(r.stdout.split(whereSeparator: \.isWhitespace).map(String.init).dropFirst(2))
    }

    func testTwoJoinedAgentsDeployScaleRollBackTraceAndLogOverTheNetworkOnly() throws {
        let data = try makeData("join-cp")
        // Fixed ports: the agents find the control plane where they joined it after its restart below.
        let port = freePort(), routerPort = freePort(), tlsPort = freePort()
        let upArguments = ["--nodes", "0", "--workers", "0", "--router-port", String(routerPort), "--tls-port", String(tlsPort)]
        var up = try startKbuildUp(self, data: data, port: port, extra: upArguments)
        let remote = RemoteCLITests.Remote(server: up, data: data, home: try tempDir(self, "join-home"))
        // The only build worker joins too: builds run where the control plane's files are not.
        let worker = try startWorker("w1", join: try workerJoinCommand("w1", data: data), hiding: data)
        let nodes = [try makeNode(1), try makeNode(2)]
        // Each token pins its node's address: the only one it may register, where the router sends its requests.
        let agents = try nodes.map { try startAgent($0, join: try joinCommand($0.name, address: $0.address, data: data), hiding: data) }
        var listed = ""
        do {
            try waitUntil("both nodes alive", timeout: 60) {
                listed = try remote.run(["nodes"]).stdout
                return listed.contains("n1  alive  10.254.91.2") && listed.contains("n2  alive  10.254.92.2")
            }
        } catch {
            // What the agents said, for the failure's reader.
            let said = nodes.map { "\($0.name): " + ((try? String(contentsOfFile: $0.data + "/agent.log", encoding: .utf8)) ?? "(no log)") }
            XCTFail("nodes: \(listed)\n" + said.joined(separator: "\n"))
            throw error
        }

        // Deploy from "another machine", then one process on each node.
        XCTAssertEqual(try remote.run(["apps:create", "web", "--stack", "busybox"]).status, 0)
        let work = try tempDir(self, "join-src")
        try writeFile(work + "/Procfile", "web: ./serve.sh\n")
        try writeFile(work + "/serve.sh", """
            #!/bin/sh
            env | sort > www/env.txt
            echo "serving $DYNO on $PORT"
            exec busybox httpd -f -p "0.0.0.0:$PORT" -h www
            """, mode: 0o755)
        try writeFile(work + "/www/index.html", "first\n")
        try git(["init", "-q"], in: work)
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "First"], in: work)
        let first = trimmed(try git(["rev-parse", "HEAD"], in: work).stdout)
        let pushURL = up.url.replacingOccurrences(of: "http://", with: "http://admin:\(up.token)@") + "/web.git"
        let pushed = try git(["push", pushURL, "HEAD:main"], in: work)
        XCTAssertEqual(pushed.status, 0, pushed.stderr)
        XCTAssertTrue(pushed.stderr.contains("v1 is live"), pushed.stderr)
        // Built by w1 from inputs it fetched; its layer, cache and log sent back; no live copy left behind.
        XCTAssertTrue(pushed.stderr.contains("Fetching the build's inputs from the control plane"), pushed.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: worker.data + "/keg"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: worker.data + "/refs.sqlite"), "the worker made a ref store of its own")
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: data + "/builds/logs")) ?? [], [])
        let scaled = try remote.run(["ps:scale", "web", "web=2"])
        XCTAssertEqual(scaled.status, 0, scaled.stderr)
        var procs: [Proc] = []
        try waitUntil("2 healthy, one per node", timeout: 60) {
            procs = try JSONDecoder().decode([Proc].self, from: Data(try remote.run(["ps", "web", "--json"]).stdout.utf8))
            return healthy(procs, count: 2) && Set(procs.map(\.node)) == ["n1", "n2"]
        }
        // Each node's process answers through the router, at the node's address.
        var served = Set<String>()
        try waitUntil("both nodes serve") {
            let r = routed(routerPort, host: "web.localhost", path: "/env.txt")
            if r.status == 200, let dyno = r.body.split(separator: "\n").first(where: { $0.hasPrefix("DYNO=") }) { served.insert(String(dyno)) }
            return served.count == 2
        }
        XCTAssertEqual(routed(routerPort, host: "web.localhost").body, "first\n")
        // Each agent pulled the image into its own Keg; neither saw the control plane's.
        for node in nodes {
            XCTAssertTrue(FileManager.default.fileExists(atPath: node.data + "/keg"), node.name)
            XCTAssertFalse(FileManager.default.fileExists(atPath: node.data + "/refs.sqlite"), "\(node.name) made a ref store of its own")
        }

        // A second release, then a rollback to the first: served from both nodes.
        try writeFile(work + "/www/index.html", "second\n")
        try git(["commit", "-q", "-am", "Second"], in: work)
        XCTAssertEqual(try git(["push", pushURL, "HEAD:main"], in: work).status, 0)
        try waitUntil("v2 serves") { routed(routerPort, host: "web.localhost").body == "second\n" }
        let rolled = try remote.run(["releases:rollback", "web", "v1"])
        XCTAssertEqual(rolled.status, 0, rolled.stderr)
        // v2 was the scale, v3 the second push: v4 is v1's image with today's formation.
        XCTAssertTrue(rolled.stdout.contains("now v4"), rolled.stdout)
        try waitUntil("v4 (v1's image) serves on both", timeout: 60) {
            procs = try JSONDecoder().decode([Proc].self, from: Data(try remote.run(["ps", "web", "--json"]).stdout.utf8))
            return healthy(procs, count: 2, release: 4) && Set(procs.map(\.node)) == ["n1", "n2"] && routed(routerPort, host: "web.localhost").body == "first\n"
        }

        // Trace: the running release comes from the first commit.
        let traced = try remote.run(["trace", "web"])
        XCTAssertEqual(traced.status, 0, traced.stderr)
        XCTAssertTrue(traced.stdout.contains(first), traced.stdout)
        // A PID, named with the node it runs on; one no node reports, an unknown one, a bad node name: errors saying so.
        for p in procs {
            let pid = try XCTUnwrap(p.hostPID)
            let byPID = try remote.run(["trace", String(pid), "--node", p.node])
            XCTAssertEqual(byPID.status, 0, byPID.stderr)
            XCTAssertTrue(byPID.stdout.contains("web.\(p.name) on node \(p.node), host PID \(pid)") && byPID.stdout.contains(first),
                          byPID.stdout)
        }
        let notOurs = try remote.run(["trace", "1", "--node", "n1"])
        XCTAssertNotEqual(notOurs.status, 0)
        XCTAssertTrue(notOurs.stderr.contains("PID 1 is not a kbuild process on node n1"), notOurs.stderr)
        let gone = try remote.run(["trace", "4194300", "--node", "n2"])
        XCTAssertTrue(gone.stderr.contains("PID 4194300 is no process node n2 reports"), gone.stderr)
        XCTAssertTrue(try remote.run(["trace", "1", "--node", "Not_A_Node"]).stderr.contains("invalid node name"))

        // Logs: both nodes' lines, sent by their agents to the control plane.
        var logs = ""
        try waitUntil("both processes' lines in the logs") {
            logs = try remote.run(["logs", "web"]).stdout
            return logs.contains("serving web.1 on") && logs.contains("serving web.2 on")
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: data + "/nodes/n1/logs"), "n1's copy of its logs on the control plane")
        // --tail from "another machine": new lines are pushed as the nodes' agents send them, here the first lines of
        // both processes restarted meanwhile.
        let tailOut = try tempDir(self, "join-tail") + "/out"
        let hide = #"mount -t tmpfs -o size=1m,mode=0700 kbuild-hidden "$0" && exec "$@""#
        let tailing = try spawnGroup("/usr/bin/env", ["-u", "KBUILD_DATA_DIR", "HOME=\(remote.home)", "XDG_CONFIG_HOME=", "KBUILD_URL=\(up.url)",
                                                      "KBUILD_TOKEN=\(up.token)", "/usr/bin/unshare", "--mount", "--propagation", "private",
                                                      "/bin/sh", "-c", hide, data, kbuildBinary, "logs", "web", "--tail", "--lines", "0"], output: tailOut)
        addTeardownBlock { kill(-tailing, SIGKILL); _ = reap(tailing) }
        sleep(1)
        let oldPIDs = Set(procs.compactMap(\.hostPID))
        XCTAssertEqual(try remote.run(["ps:restart", "web"]).status, 0)
        try waitUntil("the restarted processes' first lines pushed to the tail", timeout: 60) {
            let text = (try? String(contentsOfFile: tailOut, encoding: .utf8)) ?? ""
            return text.contains("serving web.1 on") && text.contains("serving web.2 on")
        }
        kill(-tailing, SIGTERM)
        _ = reap(tailing)
        try waitUntil("2 healthy again after the restart", timeout: 60) {
            procs = try JSONDecoder().decode([Proc].self, from: Data(try remote.run(["ps", "web", "--json"]).stdout.utf8))
            return healthy(procs, count: 2) && Set(procs.compactMap(\.hostPID)).isDisjoint(with: oldPIDs)
        }

        // The control plane goes away: the apps serve on (at the node's address), and when it is back the
        // agents reconnect and restart nothing.
        let before = Dictionary(uniqueKeysWithValues: procs.map { ($0.name, $0.hostPID) })
        kill(up.process.processIdentifier, SIGTERM)
        up.process.waitUntilExit()
        // The state as it is now, copied while nothing writes it: restored below, it is older than what the agents will have seen.
        let backup = try tempDir(self, "join-state-backup")
        let stateFiles = ["refs.sqlite", "refs.sqlite-wal", "refs.sqlite-shm"]
        for file in stateFiles where FileManager.default.fileExists(atPath: data + "/" + file) {
            try FileManager.default.copyItem(atPath: data + "/" + file, toPath: backup + "/" + file)
        }
        for p in procs {
            let r = try sh("/usr/bin/curl", ["-s", "--max-time", "5", "http://\(p.node == "n1" ? "10.254.91.2" : "10.254.92.2"):\(try XCTUnwrap(p.port))/"])
            XCTAssertEqual(r.stdout, "first\n", "\(p.name) on \(p.node) while the control plane is down")
        }
        sleep(3)
        up = try startKbuildUp(self, data: data, port: port, extra: upArguments)
        try waitUntil("both nodes alive again") {
            let listed = try remote.run(["nodes"]).stdout
            return listed.contains("n1  alive") && listed.contains("n2  alive")
        }
        try waitUntil("served again") { routed(routerPort, host: "web.localhost").body == "first\n" }
        procs = try JSONDecoder().decode([Proc].self, from: Data(try remote.run(["ps", "web", "--json"]).stdout.utf8))
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: procs.map { ($0.name, $0.hostPID) }), before, "the agents restarted processes")
        for (node, agent) in zip(nodes, agents) { XCTAssertTrue(agent.isRunning, "\(node.name)'s agent exited") }
        XCTAssertTrue(worker.process.isRunning, "the worker exited: \((try? String(contentsOfFile: worker.data + "/worker.log", encoding: .utf8)) ?? "")")

        // The control plane restored from that older copy (a restored backup, a lagging replica): each agent finds
        // the store at a revision older than one it saw and does not act on it; its processes keep running.
        // (Both agents have reported since the restart: each report is a write, so they have seen revisions past the copy's.)
        sleep(2)
        kill(up.process.processIdentifier, SIGTERM)
        up.process.waitUntilExit()
        for file in stateFiles {
            try? FileManager.default.removeItem(atPath: data + "/" + file)
            if FileManager.default.fileExists(atPath: backup + "/" + file) { try FileManager.default.copyItem(atPath: backup + "/" + file, toPath: data + "/" + file) }
        }
        up = try startKbuildUp(self, data: data, port: port, extra: upArguments)
        try waitUntil("each agent ignored the older state", timeout: 30) {
            nodes.allSatisfy { node in
                ((try? String(contentsOfFile: node.data + "/agent.log", encoding: .utf8)) ?? "").contains("seen before: ignored")
            }
        }
        procs = try JSONDecoder().decode([Proc].self, from: Data(try remote.run(["ps", "web", "--json"]).stdout.utf8))
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: procs.map { ($0.name, $0.hostPID) }), before, "an agent acted on the older state")
        for p in procs {
            let r = try sh("/usr/bin/curl", ["-s", "--max-time", "5", "http://\(p.node == "n1" ? "10.254.91.2" : "10.254.92.2"):\(try XCTUnwrap(p.port))/"])
            XCTAssertEqual(r.stdout, "first\n", "\(p.name) on \(p.node) after the restore")
        }
    }

    /// A joined worker killed mid-build on its own "machine": the pusher saw
    /// its log as it ran (sent through the API), its claim runs out, a worker
    /// that joins later takes the build over, and the push succeeds.
    func testAJoinedWorkerKilledMidBuildLosesItsBuildToTheNext() throws {
        let data = try makeData("join-kill")
        let up = try startKbuildUp(self, data: data, extra: ["--nodes", "0", "--workers", "0", "--tls-port", String(freePort())])
        XCTAssertEqual(try kbuild(["apps:create", "slow", "--stack", "busybox"], dataDir: data).status, 0)
        XCTAssertEqual(try kbuild(["apps:set", "slow", "build-network=none"], dataDir: data).status, 0)
        let work = try tempDir(self, "join-kill-src")
        try writeFile(work + "/.buildpacks", "./bp\n")
        try writeFile(work + "/Procfile", "web: httpd -f -p $PORT\n")
        try writeFile(work + "/id.txt", UUID().uuidString)
        try writeFile(work + "/bp/bin/detect", "#!/bin/sh\necho Slow\n", mode: 0o755)
        try writeFile(work + "/bp/bin/compile", "#!/bin/sh\necho '-----> Compiling slowly'\nsleep 4\necho '-----> Compiled'\n", mode: 0o755)
        try git(["init", "-q"], in: work)
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "Slow"], in: work)
        let first = try startWorker("w1", join: try workerJoinCommand("w1", data: data), hiding: data)
        let log = try tempDir(self, "join-kill-log") + "/push.log"
        let pushURL = up.url.replacingOccurrences(of: "http://", with: "http://admin:\(up.token)@") + "/slow.git"
        let push = try spawnServer("/usr/bin/git", ["-C", work, "push", pushURL, "HEAD:main"], output: log)
        try waitUntil("the pusher follows w1's build", timeout: 60) {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("Compiling slowly")
        }
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        _ = try startWorker("w2", join: try workerJoinCommand("w2", data: data), hiding: data)
        let status = reap(push)
        let output = try String(contentsOfFile: log, encoding: .utf8)
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("(the build started again, on w2)"), output)
        XCTAssertEqual(output.components(separatedBy: "Compiling slowly").count - 1, 2, "both attempts' logs reached the pusher: \(output)")
        XCTAssertTrue(output.contains("remote: -----> Image K-"), output)
        XCTAssertEqual(try kbuild(["ref", "ls", "builds/claims"], dataDir: data).stdout, "", "no claim is left behind")
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: data + "/builds/logs")) ?? [], [],
                       "the live copies (the dead w1's too) went with the result")
    }

    /// The https port between machines: a join is pinned to the CA's hash, the CLI trusts the CA it is given, and nothing else.
    func testTLSBetweenMachinesIsPinnedToKbuildsOwnCA() throws {
        let data = try makeData("join-tls")
        let up = try startKbuildUp(self, data: data)
        let join = try joinCommand("n1", data: data)
        // --join URL --ca-hash HASH --token TOKEN --name n1
        let url = join[1], hash = join[3], token = join[5]
        XCTAssertTrue(url.hasPrefix("https://"), url)
        // The CA is public and is what the hash names.
        let ca = try String(contentsOfFile: data + "/tls/ca.crt", encoding: .utf8)
        XCTAssertEqual(try sh("/usr/bin/curl", ["-sk", url + "/tls/ca.crt"]).stdout, ca)
        let der = try sh("/usr/bin/openssl", ["x509", "-outform", "DER"], stdin: Data(ca.utf8))
        XCTAssertEqual(der.status, 0)
        XCTAssertTrue(try sh("/usr/bin/openssl", ["x509", "-noout", "-fingerprint", "-sha256", "-in", data + "/tls/ca.crt"]).stdout
            .lowercased().replacingOccurrences(of: ":", with: "").contains(hash.dropFirst(7)), hash)
        // The server's certificate chains to it for the advertised address.
        let verify = try sh("/usr/bin/curl", ["-s", "--cacert", data + "/tls/ca.crt", "-H", "Authorization: Bearer \(up.token)", url + "/api/v1/apps"])
        XCTAssertEqual(verify.status, 0, verify.stderr)
        XCTAssertEqual(trimmed(verify.stdout), "[]")
        XCTAssertNotEqual(try sh("/usr/bin/curl", ["-s", url + "/api/v1/apps"]).status, 0, "a client without the CA trusted it")

        // A wrong pin: refused before anything is sent, saying why.
        var wrong = join
        wrong[3] = "sha256:" + String(repeating: "0", count: 64)
        let node = try tempDir(self, "join-tls-n1")
        let refused = try sh("/usr/bin/timeout", ["60", kbuildBinary, "agent"] + wrong + ["--isolation", "shared", "--data-dir", node])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("refusing to join") && refused.stderr.contains(hash), refused.stderr)
        // No pin for an https URL: refused up front.
        let unpinned = try sh(kbuildBinary, ["agent", "--join", url, "--token", token, "--name", "n1", "--data-dir", node])
        XCTAssertNotEqual(unpinned.status, 0)
        XCTAssertTrue(unpinned.stderr.contains("needs --ca-hash"), unpinned.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: node + "/control-plane-ca.crt"))
        // Pinned, but with its processes where the router could not reach them (this machine's own namespaces): refused, saying how.
        let unreachable = try sh(kbuildBinary, ["agent"] + join + ["--data-dir", node])
        XCTAssertNotEqual(unreachable.status, 0)
        XCTAssertTrue(unreachable.stderr.contains("--network NS") && unreachable.stderr.contains("--isolation shared"), unreachable.stderr)

        // The CLI from another machine over https: with the CA it works; without, it says what to do.
        let home = try tempDir(self, "join-tls-home")
        let env = ["HOME": home, "KBUILD_URL": url, "KBUILD_TOKEN": up.token]
        var withCA = env
        withCA["KBUILD_CA_FILE"] = data + "/tls/ca.crt"
        let apps = try sh(kbuildBinary, ["nodes"], env: withCA)
        XCTAssertEqual(apps.status, 0, apps.stderr)
        let untrusted = try sh(kbuildBinary, ["nodes"], env: env)
        XCTAssertNotEqual(untrusted.status, 0)
        XCTAssertTrue(untrusted.stderr.contains("KBUILD_CA_FILE"), untrusted.stderr)
        // Plain HTTP stays for this machine.
        XCTAssertTrue(up.url.hasPrefix("http://127.0.0.1:"), up.url)
    }
}
