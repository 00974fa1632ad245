import Foundation
import XCTest

/// After the push: releases, config, formation, the scheduler, the node agent
/// and its processes, with a real `kbuild up`, real git pushes and real
/// sandboxed processes on the busybox stack.
final class RunTests: XCTestCase {
    func testReleasesConfigScaleAndRollback() throws {
        let data = try makeData("releases")
        let routerPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--node-memory", "2G", "--node-cpus", "2", "--router-port", String(routerPort)])
        let work = try makeApp("shop", data: data)
        // Before the first push: the router knows no such app.
        XCTAssertEqual(routed(routerPort, host: "shop.localhost").status, 404)
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stderr.contains("remote: -----> Released v1 (web=1); rolling out"), push.stderr)
        XCTAssertTrue(push.stderr.contains("remote: -----> v1 is live: every process healthy"), push.stderr)
        var procs = try ps("shop", data)
        XCTAssertTrue(healthy(procs, count: 1, release: 1), "\(procs)")
        let first = try XCTUnwrap(procs.first)
        let port = try XCTUnwrap(first.port)
        XCTAssertTrue(get(first)?.hasPrefix("hello from shop") ?? false)
        // Through the router, by Host header, with a request id; unknown and malformed hosts are told so.
        try waitUntil("routed") { routed(routerPort, host: "shop.localhost").status == 200 }
        let viaRouter = routed(routerPort, host: "shop.localhost:\(routerPort)")
        XCTAssertTrue(viaRouter.body.hasPrefix("hello from shop"), viaRouter.body)
        XCTAssertNotNil(viaRouter.headers["x-request-id"], "\(viaRouter.headers)")
        let unknown = routed(routerPort, host: "nosuch.localhost")
        XCTAssertEqual(unknown.status, 404)
        XCTAssertTrue(unknown.body.contains("nosuch.localhost"), unknown.body)
        XCTAssertEqual(routed(routerPort, host: "bad_name.localhost").status, 400)
        // A custom domain.
        XCTAssertEqual(try kbuild(["domains:add", "shop", "Shop.Example.com"], dataDir: data).status, 0)
        XCTAssertNotEqual(try kbuild(["domains:add", "shop", "not a domain"], dataDir: data).status, 0)
        XCTAssertNotEqual(try kbuild(["domains:add", "shop", "other.localhost"], dataDir: data).status, 0)
        XCTAssertEqual(try kbuild(["apps:create", "rival", "--stack", "busybox"], dataDir: data).status, 0)
        let taken = try kbuild(["domains:add", "rival", "shop.example.com"], dataDir: data)
        XCTAssertTrue(taken.stderr.contains("already shop's"), taken.stderr)
        try waitUntil("domain routed") { routed(routerPort, host: "shop.example.com").status == 200 }
        // The trace environment is there.
        let env = try XCTUnwrap(get(first, "/env.txt"))
        for line in ["KBUILD_APP=shop", "KBUILD_RELEASE=v1", "DYNO=web.1", "PORT=\(port)", "KBUILD_COMMIT=\(trimmed(try git(["rev-parse", "HEAD"], in: work).stdout))"] {
            XCTAssertTrue(env.contains(line + "\n"), "\(line) in \(env)")
        }
        XCTAssertTrue(env.contains("KBUILD_SOURCE=K-"), env)

        // config:set: a new release, the value reaches the process, and is not printed.
        let set = try kbuild(["config:set", "shop", "GREETING=hello world", "API_KEY=s3cr3t-value"], dataDir: data)
        XCTAssertEqual(set.status, 0, set.stderr)
        XCTAssertTrue(set.stdout.contains("v2"), set.stdout)
        XCTAssertFalse(set.stdout.contains("s3cr3t-value"), "the value is not echoed")
        try waitUntil("v2 serving") { try healthy(ps("shop", data), count: 1, release: 2) }
        let second = try XCTUnwrap(try ps("shop", data).first)
        XCTAssertTrue(get(second, "/env.txt")?.contains("API_KEY=s3cr3t-value\n") ?? false)
        XCTAssertEqual(trimmed(try kbuild(["config:get", "shop", "GREETING"], dataDir: data).stdout), "hello world")
        // Never baked into the image: the image's config has no such var.
        let image = try kbuild(["image", "ls", "shop", "--json"], dataDir: data)
        XCTAssertFalse(image.stdout.contains("s3cr3t-value"), image.stdout)

        // ps:scale: three processes, the running one is kept (nothing restarts).
        let before = try XCTUnwrap(try ps("shop", data).first?.hostPID)
        let scale = try kbuild(["ps:scale", "shop", "web=3"], dataDir: data)
        XCTAssertEqual(scale.status, 0, scale.stderr)
        try waitUntil("3 healthy") { try ps("shop", data).filter { $0.state == "healthy" }.count == 3 }
        procs = try ps("shop", data)
        XCTAssertEqual(procs.map(\.name).sorted(), ["web.1", "web.2", "web.3"])
        XCTAssertTrue(procs.contains { $0.hostPID == before }, "web.1 was not restarted by a scale")
        XCTAssertEqual(Set(procs.compactMap(\.port)).count, 3)

        // Bad input, each refused with nothing changed.
        for (args, message) in [
            (["ps:scale", "shop", "web=-1"], "cannot be negative"),
            (["ps:scale", "shop", "web=1000"], "at most 100"),
            (["ps:scale", "shop", "worker=1"], "no process type worker"),
            (["ps:scale", "shop", "web=5"], "does not fit"),
            (["config:set", "shop", "1BAD=x"], "invalid config var name"),
            (["config:set", "shop", "PORT=1"], "set by kbuild"),
            (["config:set", "shop", "NOEQUALS"], "want KEY=VALUE"),
            (["config:unset", "shop", "MISSING"], "no config var"),
            (["releases:rollback", "shop", "v99"], "no release v99"),
            (["releases:info", "shop", "v0"], "invalid release"),
            (["ps", "nosuchapp"], "no app named"),
        ] {
            let r = try kbuild(args, dataDir: data)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        XCTAssertEqual(try ps("shop", data).count, 3, "a refused scale keeps what runs")

        // Rollback to v1: v1's config (no API_KEY), the formation stays (3), as a new release.
        let releasesBefore = try kbuild(["releases", "shop"], dataDir: data).stdout
        XCTAssertTrue(releasesBefore.hasPrefix("v3 "), releasesBefore)
        let rollback = try kbuild(["releases:rollback", "shop", "v1"], dataDir: data)
        XCTAssertEqual(rollback.status, 0, rollback.stderr)
        XCTAssertTrue(rollback.stdout.contains("Rollback to v1, now v4"), rollback.stdout)
        try waitUntil("v4 on 3 processes") { try healthy(ps("shop", data), count: 3, release: 4) }
        let fourth = try XCTUnwrap(try ps("shop", data).first)
        XCTAssertFalse(get(fourth, "/env.txt")?.contains("API_KEY") ?? true, "v1's config came back")
        XCTAssertFalse(try kbuild(["config", "shop"], dataDir: data).stdout.contains("API_KEY"))
        let list = try kbuild(["releases", "shop"], dataDir: data).stdout
        for text in ["v4 ", "Rollback to v1", "v3 ", "Scale web=3", "v2 ", "Set API_KEY, GREETING config vars", "v1 ", "Deploy "] {
            XCTAssertTrue(list.contains(text), "\(text) in \(list)")
        }
        let info = try kbuild(["releases:info", "shop", "v2", "--json"], dataDir: data)
        XCTAssertEqual(info.status, 0, info.stderr)
        XCTAssertTrue(info.stdout.contains("\"version\" : 2"), info.stdout)

        // kbuild run: a one-off process in the image with the config; output and exit status come back.
        // (The data dir comes from the environment: everything after -- is the command.)
        let run = try sh(kbuildBinary, ["run", "shop", "--", "sh", "-c", "echo out $KBUILD_APP $KBUILD_RELEASE; echo oops >&2; exit 7"], env: ["KBUILD_DATA_DIR": data])
        XCTAssertEqual(run.status, 7)
        XCTAssertEqual(run.stdout, "out shop v4\n")
        XCTAssertTrue(run.stderr.contains("oops"), run.stderr)
        let missing = try sh(kbuildBinary, ["run", "shop", "--", "nosuchcommand"], env: ["KBUILD_DATA_DIR": data])
        XCTAssertEqual(missing.status, 127)
        XCTAssertTrue(missing.stderr.contains("no command nosuchcommand in shop v4's image"), missing.stderr)

        // Scaled to zero: the router says the app has no healthy process.
        XCTAssertEqual(try kbuild(["ps:scale", "shop", "web=0"], dataDir: data).status, 0)
        try waitUntil("503") { routed(routerPort, host: "shop.localhost").status == 503 }
        XCTAssertTrue(routed(routerPort, host: "shop.localhost").body.contains("no healthy web process"))
    }

    func testCrashedProcessesComeBackAndACrashLoopReverts() throws {
        let data = try makeData("crash")
        _ = try startKbuildUp(self, data: data)
        let work = try makeApp("flaky", data: data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        let first = try XCTUnwrap(try ps("flaky", data).first)
        XCTAssertEqual(first.state, "healthy")

        // kill -9 of the web process (the whole sandbox): back within the first backoff (1 s) and a start.
        let started = Date()
        kill(try XCTUnwrap(first.hostPID), SIGKILL)
        try waitUntil("web.1 back") {
            let p = try ps("flaky", data).first
            return p?.state == "healthy" && p?.hostPID != first.hostPID
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 10)
        XCTAssertEqual(try ps("flaky", data).first?.restarts, 1)

        // A release that crash-loops is reverted; the pusher and `releases` say so, and the old one serves on.
        let serving = try XCTUnwrap(try ps("flaky", data).first)
        try writeFile(work + "/serve.sh", "#!/bin/sh\necho 'about to crash'\nexit 3\n", mode: 0o755)
        try git(["commit", "-q", "-am", "Break it"], in: work)
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertTrue(push.stderr.contains("v2 failed: web.1 crashed 3 times, last exit status 3; reverted to the last healthy release (now v3)"), push.stderr)
        let releases = try kbuild(["releases", "flaky"], dataDir: data).stdout
        XCTAssertTrue(releases.contains("v3 "), releases)
        XCTAssertTrue(releases.contains("Revert to v1: v2 failed (web.1 crashed 3 times, last exit status 3)"), releases)
        XCTAssertTrue(releases.contains("[reverted by v3: web.1 crashed 3 times"), releases)
        let after = try ps("flaky", data)
        XCTAssertEqual(after.count, 1)
        XCTAssertEqual(after.first?.hostPID, serving.hostPID, "the healthy process was never stopped")
        XCTAssertNotNil(get(try XCTUnwrap(after.first)))
        let logs = try kbuild(["logs", "flaky", "--lines", "50"], dataDir: data).stdout
        XCTAssertTrue(logs.contains("about to crash"), logs)
    }

    func testAgentKilledOrRestartedKeepsItsProcesses() throws {
        let data = try makeData("adopt")
        // kbuild up without a node agent, and an agent of its own that can be killed.
        _ = try startKbuildUp(self, data: data, extra: ["--nodes", "0"])
        let agentLog = data + "/agent.log"
        var agent = try spawnServer(kbuildBinary, ["agent", "--data-dir", data], output: agentLog)
        defer { kill(agent, SIGKILL); _ = reap(agent) }
        let work = try makeApp("steady", data: data)
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertEqual(try kbuild(["ps:scale", "steady", "web=2"], dataDir: data).status, 0)
        try waitUntil("2 healthy") { try healthy(ps("steady", data), count: 2) }
        let before = try ps("steady", data)

        kill(agent, SIGKILL)
        _ = reap(agent)
        // The app keeps serving with no agent at all.
        for p in before { XCTAssertNotNil(get(p), "\(p.name) serves while its agent is dead") }
        try "".write(toFile: agentLog, atomically: false, encoding: .utf8)
        agent = try spawnServer(kbuildBinary, ["agent", "--data-dir", data], output: agentLog)
        // The new agent says whom it adopted, then reports them (the old report may still look fresh).
        try waitUntil("re-adopted") {
            let log = (try? String(contentsOfFile: agentLog, encoding: .utf8)) ?? ""
            return log.contains("adopted steady.web.1") && log.contains("adopted steady.web.2")
        }
        try waitUntil("reported healthy") {
            let now = try ps("steady", data)
            return healthy(now, count: 2) && Set(now.compactMap(\.hostPID)) == Set(before.compactMap(\.hostPID))
        }
        XCTAssertFalse(try String(contentsOfFile: agentLog, encoding: .utf8).contains("started steady."), "nothing started anew")

        // A graceful stop (SIGTERM) of the agent stops no process either.
        kill(agent, SIGTERM)
        XCTAssertEqual(reap(agent), 0)
        for p in before { XCTAssertTrue(kill(try XCTUnwrap(p.hostPID), 0) == 0, "\(p.name) outlived its agent") }
        try "".write(toFile: agentLog, atomically: false, encoding: .utf8)
        agent = try spawnServer(kbuildBinary, ["agent", "--data-dir", data], output: agentLog)
        try waitUntil("re-adopted again") { ((try? String(contentsOfFile: agentLog, encoding: .utf8)) ?? "").contains("adopted steady.web.2") }
        XCTAssertEqual(Set(try ps("steady", data).compactMap(\.hostPID)), Set(before.compactMap(\.hostPID)))

        // kbuild down stops them all.
        kill(agent, SIGTERM)
        _ = reap(agent)
        let down = try kbuild(["down", "--grace", "2"], dataDir: data)
        XCTAssertTrue(down.stdout.contains("Stopped 2 processes"), down.stdout)
        for p in before { XCTAssertNotEqual(kill(try XCTUnwrap(p.hostPID), 0), 0) }
    }

    func testRestartOfKbuildUpMidRolloutCompletesIt() throws {
        let data = try makeData("midroll")
        var up = try startKbuildUp(self, data: data)
        // Each new process takes 3 s to listen, so the rollout of 2 processes spans a restart.
        let slow = "#!/bin/sh\nsleep 3\nexec busybox httpd -f -p \"0.0.0.0:$PORT\" -h www\n"
        let work = try makeApp("rolling", data: data, serve: slow)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        XCTAssertEqual(try kbuild(["ps:scale", "rolling", "web=2"], dataDir: data).status, 0)
        try waitUntil("v2 on 2") { try healthy(ps("rolling", data), count: 2) }
        XCTAssertEqual(try kbuild(["config:set", "rolling", "VERSION=3"], dataDir: data).status, 0)
        try waitUntil("the rollout under way") { try ps("rolling", data).contains { $0.release == 3 } }

        kill(up.process.processIdentifier, SIGKILL)
        up.process.waitUntilExit()
        up = try startKbuildUp(self, data: data)
        try waitUntil("v3 on 2, nothing older", timeout: 60) { try healthy(ps("rolling", data), count: 2, release: 3) }
        XCTAssertEqual(trimmed(try kbuild(["releases", "rolling"], dataDir: data).stdout).split(separator: "\n").count, 3, "no release lost or added")
        // No orphan: exactly the two processes of v3 run, as the process table says.
        try waitUntil("old processes gone") { self.appProcesses("rolling").count == 2 }
        XCTAssertEqual(Set(appProcesses("rolling").map(\.release)), ["v3"])
        let files = try FileManager.default.contentsOfDirectory(atPath: data + "/nodes/local/processes")
        XCTAssertEqual(files.filter { $0.hasPrefix("rolling.") }.count, 2, "\(files)")
    }

    func testAppTokensActOnTheirAppsOnly() throws {
        let data = try makeData("tokens")
        let server = try startKbuildUp(self, data: data)
        let work = try makeApp("mine", data: data)
        XCTAssertEqual(try kbuild(["apps:create", "theirs", "--stack", "busybox"], dataDir: data).status, 0)
        let made = try kbuild(["tokens:create", "teammate", "--app", "mine"], dataDir: data)
        XCTAssertEqual(made.status, 0, made.stderr)
        let token = trimmed(made.stdout)
        XCTAssertTrue(token.hasPrefix("kbt_"), token)
        XCTAssertFalse(try kbuild(["tokens"], dataDir: data).stdout.contains(token), "only the hash is kept")
        XCTAssertNotEqual(try kbuild(["tokens:create", "x", "--app", "nosuch"], dataDir: data).status, 0)
        let env = ["KBUILD_URL": server.url, "KBUILD_TOKEN": token]
        func cli(_ args: [String]) throws -> Result { try sh(kbuildBinary, args, env: env) }

        XCTAssertEqual(try cli(["config:set", "mine", "A=1"]).status, 0)
        for app in ["theirs", "nosuch"] {
            let r = try cli(["config", app])
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains("this token may not do that"), r.stderr)
            XCTAssertFalse(r.stderr.contains("no app named"), "a 403 says nothing of whether the app exists")
        }
        func curl(_ path: String, token: String?) throws -> (Int, String) {
            let r = try sh("/usr/bin/curl", ["-s", "-o", "/dev/stderr", "-w", "%{http_code}"] + (token.map { ["-H", "Authorization: Bearer \($0)"] } ?? []) + [server.url + path])
            return (Int(r.stdout) ?? 0, r.stderr)
        }
        let list = try curl("/api/v1/apps", token: token)
        XCTAssertEqual(list.0, 200)
        XCTAssertTrue(list.1.contains("\"name\":\"mine\"") && !list.1.contains("theirs"), list.1)
        XCTAssertEqual(try curl("/api/v1/nodes", token: token).0, 403)
        let destroy = try sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", "-H", "Authorization: Bearer \(token)",
                                               server.url + "/api/v1/apps/mine?confirm=mine"])
        XCTAssertEqual(destroy.stdout, "403", "an app token cannot destroy its app")
        XCTAssertEqual(try curl("/v1/objects/K-" + String(repeating: "0", count: 64), token: token).0, 403)
        XCTAssertEqual(try curl("/api/v1/apps/theirs", token: nil).0, 401)
        XCTAssertEqual(try curl("/api/v1/apps/theirs", token: "kbt_wrong").0, 401)
        // git: its own app, not another.
        let host = server.url.replacingOccurrences(of: "http://", with: "")
        let pushed = try git(["push", "http://teammate:\(token)@\(host)/mine.git", "main"], in: work)
        XCTAssertEqual(pushed.status, 0, pushed.stderr)
        let refused = try git(["push", "http://teammate:\(token)@\(host)/theirs.git", "main"], in: work)
        XCTAssertNotEqual(refused.status, 0)
        // Revoked: refused within a second or so.
        XCTAssertEqual(try kbuild(["tokens:revoke", "teammate"], dataDir: data).status, 0)
        try waitUntil("revoked", timeout: 5) { try curl("/api/v1/apps/mine", token: token).0 == 401 }
    }

    func testRestartAndDestroy() throws {
        let data = try makeData("destroy")
        let routerPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        let work = try makeApp("gone", data: data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        let before = try XCTUnwrap(try ps("gone", data).first)
        // ps:restart: a rolling restart, same release, new processes.
        XCTAssertEqual(try kbuild(["ps:restart", "gone"], dataDir: data).status, 0)
        try waitUntil("restarted") {
            let p = try ps("gone", data)
            return p.count == 1 && p[0].state == "healthy" && p[0].hostPID != before.hostPID && p[0].release == before.release
        }
        XCTAssertNotEqual(try kbuild(["ps:restart", "gone", "worker"], dataDir: data).status, 0)
        // apps:destroy asks; without an answer, or a wrong one, nothing goes.
        let unconfirmed = try kbuild(["apps:destroy", "gone"], dataDir: data)
        XCTAssertNotEqual(unconfirmed.status, 0)
        XCTAssertTrue(unconfirmed.stderr.contains("without confirmation"), unconfirmed.stderr)
        XCTAssertNotEqual(try kbuild(["apps:destroy", "gone", "--confirm", "other"], dataDir: data).status, 0)
        XCTAssertEqual(routed(routerPort, host: "gone.localhost").status, 200)
        let destroyed = try kbuild(["apps:destroy", "gone", "--confirm", "gone"], dataDir: data)
        XCTAssertEqual(destroyed.status, 0, destroyed.stderr)
        try waitUntil("its processes stopped") { self.appProcesses("gone").isEmpty }
        try waitUntil("unknown to the router") { routed(routerPort, host: "gone.localhost").status == 404 }
        XCTAssertFalse(FileManager.default.fileExists(atPath: data + "/git/gone.git"))
        XCTAssertNotEqual(try kbuild(["ps", "gone"], dataDir: data).status, 0)
    }

    func testAppJSONHealthChecksGateTheRollout() throws {
        let data = try makeData("health")
        let routerPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        // Listening at once, but ready (GET /ready.txt answers) only after 3 s.
        let serve = """
            #!/bin/sh
            (sleep 3; echo ok > www/ready.txt) &
            exec busybox httpd -f -p "0.0.0.0:$PORT" -h www
            """
        let app = #"{"name": "ready", "healthchecks": {"web": [{"type": "startup", "path": "/ready.txt", "timeout": 2}]}}"#
        let work = try makeApp("ready", data: data, serve: serve, files: ["app.json": app])
        let started = Date()
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stderr.contains("v1 is live"), push.stderr)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(started), 3, "live only once /ready.txt answers")
        XCTAssertEqual(routed(routerPort, host: "ready.localhost", path: "/ready.txt").body, "ok\n")

        // A bad app.json rejects the push before anything is built, and v1 serves on.
        try writeFile(work + "/app.json", #"{"healthchecks": {"web": [{"path": "no-slash"}]}}"#)
        try git(["commit", "-q", "-am", "Bad app.json"], in: work)
        let bad = try git(["push", "kbuild", "main"], in: work)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("healthchecks.web[0].path must be a path starting with /"), bad.stderr)
        XCTAssertEqual(routed(routerPort, host: "ready.localhost").status, 200)
        XCTAssertEqual(try kbuild(["releases", "ready"], dataDir: data).stdout.split(separator: "\n").count, 1)
    }
}
