import Foundation
import XCTest

/// Add-ons end to end, on the shared Debian stack and its add-on stack
/// (debian-13-addons: Debian's PostgreSQL 17): a Flask app with SQLAlchemy
/// over psycopg, built with pip from PyPI, that migrates in its release phase
/// and keeps its rows across a restart, a redeploy, a rollback and a kill -9
/// of PostgreSQL; the add-on reached over TLS by the apps attached to it and
/// by no other; its password in no release, log or push output.
final class AddonTests: XCTestCase {
    var data: String { SharedStacks.data }

    func notes(_ port: Int) -> (notes: [String], ssl: Bool?, release: String?)? {
        let r = routed(port, host: "notesdb.localhost")
        guard r.status == 200, let json = try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any] else { return nil }
        return (json["notes"] as? [String] ?? [], json["ssl"] as? Bool, json["release"] as? String)
    }

    func waitForNotes(_ port: Int, _ want: [String], release: String? = nil, _ what: String) throws {
        try waitUntil(what, timeout: 90) {
            guard let n = notes(port) else { return false }
            return n.notes == want && (release == nil || n.release == release)
        }
    }

    func add(_ port: Int, _ note: String) throws {
        let r = try sh("/usr/bin/curl", ["-sf", "--max-time", "10", "-X", "POST", "--data-binary", note, "-H", "Host: notesdb.localhost",
                                         "http://127.0.0.1:\(port)/notes"])
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    /// `kbuild run APP -n -- sh -c SCRIPT` (the data dir by environment: anything after -- is the command's).
    func run(_ app: String, _ script: String) throws -> Result {
        try sh(kbuildBinary, ["run", app, "-n", "--", "sh", "-c", script], env: ["KBUILD_DATA_DIR": data])
    }

    /// Whether a one-off run of `app` opens a TCP connection to `address:port`.
    func reaches(_ app: String, _ address: String, _ port: Int) throws -> Bool {
        // busybox's nc, or Python's socket on the Debian stack (whose minbase has no nc).
        let r = try run(app, "if command -v nc >/dev/null; then echo | nc -w 3 \(address) \(port) >/dev/null 2>&1; "
                            + "else python3 -c \"import socket; socket.create_connection(('\(address)', \(port)), 3)\" 2>/dev/null; fi && echo open || echo closed")
        XCTAssertEqual(r.status, 0, r.stderr)
        return trimmed(r.stdout) == "open"
    }

    func testAFlaskAppKeepsItsPostgresRowsAcrossRestartRedeployRollbackAndKill9() throws {
        try XCTSkipUnless(LocalIndex.hostReachesPyPI, "this host cannot reach PyPI itself (the example installs Flask, SQLAlchemy and psycopg from it)")
        let made = try XCTUnwrap(SharedStacks.debian, "kbuild stack create did not run")
        XCTAssertEqual(made.status, 0, made.stderr)
        let data = self.data
        let routerPort = freePort()
        // Room for the two apps, two add-ons and the one-off runs beside them (each takes half a CPU of the node's).
        _ = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort), "--node-cpus", "8"])
        XCTAssertEqual(try kbuild(["apps:create", "notesdb"], dataDir: data).status, 0)
        let box = try makeApp("notesbox", data: data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: box).status, 0)
        addTeardownBlock {
            _ = try? sh(kbuildBinary, ["addons:destroy", "notesdb-postgres", "--app", "notesdb", "--confirm", "notesdb-postgres", "--force"], env: ["KBUILD_DATA_DIR": data])
            for app in ["notesdb", "notesbox"] { _ = try? sh(kbuildBinary, ["apps:destroy", app, "--confirm", app, "--volumes"], env: ["KBUILD_DATA_DIR": data]) }
        }

        // Bad input: each refused with the reason, nothing made.
        XCTAssertEqual(try kbuild(["config:set", "notesbox", "DATABASE_URL=elsewhere"], dataDir: data).status, 0)
        for (args, message) in [(["addons:create", "mysql", "--app", "notesdb"], "unknown add-on kind \"mysql\": kbuild offers postgres, redis"),
                                (["addons:create", "postgres", "--app", "nosuch"], "nosuch"),
                                (["addons:create", "postgres", "--app", "notesdb", "--as", "database"], "invalid add-on name \"database\" for --as"),
                                (["addons:create", "postgres", "--app", "notesbox", "--stack", "debian-13-addons"], "has a config var DATABASE_URL already"),
                                (["addons:create", "postgres", "--app", "notesdb", "--stack", "debian-13"], "is not an add-on stack"),
                                (["addons:create", "postgres", "--app", "notesdb", "--stack", "nosuch-addons"], "kbuild stack create nosuch-addons"),
                                (["addons:attach", "notesdb-postgres", "--app", "notesbox"], "no add-on \"notesdb-postgres\""),
                                (["addons:attach", "notesdb-postgres", "--app", "nosuch"], "nosuch")] {
            let r = try kbuild(args, dataDir: data)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        XCTAssertEqual(try kbuild(["config:unset", "notesbox", "DATABASE_URL"], dataDir: data).status, 0)
        XCTAssertTrue(trimmed(try kbuild(["ref", "ls", "addons/"], dataDir: data).stdout).isEmpty, "a refused add-on left a record")

        // The add-on, before the first push: the release phase of the first deploy reaches it.
        let created = try kbuild(["addons:create", "postgres", "--app", "notesdb", "--stack", "debian-13-addons"], dataDir: data)
        XCTAssertEqual(created.status, 0, created.stderr)
        XCTAssertTrue(created.stdout.contains("Created notesdb-postgres: postgres 17, healthy"), created.stdout)
        let url = trimmed(try kbuild(["config:get", "notesdb", "DATABASE_URL"], dataDir: data).stdout)
        let password = try XCTUnwrap(url.split(separator: ":").dropFirst(2).first?.split(separator: "@").first.map(String.init), url)
        XCTAssertEqual(password.count, 32, url)
        let address = try XCTUnwrap(url.split(separator: "@").last?.split(separator: ":").first.map(String.init))
        XCTAssertTrue(address.hasPrefix("198.1"), url)

        let work = try tempDir(self, "notesdb")
        XCTAssertEqual(try sh("/bin/cp", ["-a", "\(repositoryRoot)/examples/flask-postgres/.", work]).status, 0)
        try git(["init", "-q", "-b", "main"], in: work)
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "First"], in: work)
        XCTAssertEqual(try sh(kbuildBinary, ["git:remote", "notesdb", "--data-dir", data], cwd: work).status, 0)
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stderr.contains("migrated: table notes is there"), push.stderr)
        try waitForNotes(routerPort, [], "the app serving from its database")
        XCTAssertEqual(notes(routerPort)?.ssl, true, "the app's connection is TLS (sslmode=require)")
        try add(routerPort, "first")
        try add(routerPort, "second")
        try waitForNotes(routerPort, ["first", "second"], "the rows")

        // ps:restart, a redeploy (its release phase runs again) and a rollback: the rows stay.
        XCTAssertEqual(try kbuild(["ps:restart", "notesdb"], dataDir: data).status, 0)
        try add(routerPort, "third")
        try writeFile(work + "/VERSION", "2\n")
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "Second"], in: work)
        let second = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(second.status, 0, second.stderr)
        try waitForNotes(routerPort, ["first", "second", "third"], release: "v2", "the rows after a redeploy")
        XCTAssertEqual(try kbuild(["releases:rollback", "notesdb", "v1"], dataDir: data).status, 0)
        try waitForNotes(routerPort, ["first", "second", "third"], release: "v3", "the rows after a rollback (DATABASE_URL and the network stay)")

        // kill -9 of PostgreSQL: its agent starts it again; nothing committed is lost.
        let postmaster = try XCTUnwrap(hostProcesses(app: "notesdb-postgres").first { $0.cmdline.contains("-D\u{0}/data/postgres") }, "no postgres process")
        XCTAssertEqual(kill(postmaster.pid, SIGKILL), 0)
        try waitUntil("notesdb-postgres restarted", timeout: 60) {
            (try ps("notesdb-postgres", data)).contains { $0.state == "healthy" && $0.restarts >= 1 }
        }
        try waitForNotes(routerPort, ["first", "second", "third"], "the rows after kill -9 of PostgreSQL")
        try add(routerPort, "fourth")
        try waitForNotes(routerPort, ["first", "second", "third", "fourth"], "a write after the restart")

        // psql beside the add-on, over TLS, from the CLI.
        let psql = try kbuild(["pg:psql", "notesdb", "-c", "select count(*), (select ssl from pg_stat_ssl where pid = pg_backend_pid()) from notes"], dataDir: data)
        XCTAssertEqual(psql.status, 0, psql.stderr)
        XCTAssertTrue(psql.stdout.contains("     4 | t"), psql.stdout)
        let info = try kbuild(["pg:info", "notesdb"], dataDir: data)
        XCTAssertTrue(info.stdout.contains("Version:     17.") && info.stdout.contains("Tables:      1"), info.stdout + info.stderr)

        // Backups in the Keg, each verified by a test restore into a scratch database; a restore brings the rows back.
        let capture = try kbuild(["pg:backups:capture", "notesdb"], dataDir: data)
        XCTAssertEqual(capture.status, 0, capture.stderr)
        XCTAssertTrue(capture.stdout.contains("b001") && capture.stdout.contains("verified"), capture.stdout)
        try add(routerPort, "fifth, after the backup")
        try waitForNotes(routerPort, ["first", "second", "third", "fourth", "fifth, after the backup"], "a write after the backup")
        for (args, message) in [(["pg:backups:restore", "notesdb", "b099", "--confirm", "notesdb-postgres"], "has no backup \"b099\""),
                                (["pg:backups:restore", "notesdb", "b001"], "without confirmation"),
                                (["pg:backups:restore", "notesdb", "b001", "--confirm", "notesdb"], "does not match notesdb-postgres")] {
            let r = try kbuild(args, dataDir: data)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        let restored = try kbuild(["pg:backups:restore", "notesdb", "b001", "--confirm", "notesdb-postgres"], dataDir: data)
        XCTAssertEqual(restored.status, 0, restored.stderr)
        try waitForNotes(routerPort, ["first", "second", "third", "fourth"], "the rows as the backup had them")
        let dumpFile = work + "/b001.dump"
        XCTAssertEqual(try kbuild(["pg:backups:download", "notesdb", "b001", "-o", dumpFile], dataDir: data).status, 0)
        XCTAssertEqual(FileManager.default.contents(atPath: dumpFile)?.prefix(5), Data("PGDMP".utf8), "a pg_dump custom-format file")
        // A backup that fails is recorded as failed, with the reason, and is never restored.
        XCTAssertEqual(try kbuild(["ps:scale", "notesdb-postgres", "postgres=0"], dataDir: data).status, 0)
        try waitUntil("the add-on stopped") { try ps("notesdb-postgres", data).isEmpty }
        let failed = try kbuild(["pg:backups:capture", "notesdb"], dataDir: data)
        XCTAssertNotEqual(failed.status, 0)
        XCTAssertTrue(failed.stdout.contains("b002") && failed.stdout.contains("FAILED: psql failed"), failed.stdout)
        XCTAssertTrue(try kbuild(["pg:backups:restore", "notesdb", "b002", "--confirm", "notesdb-postgres"], dataDir: data).stderr.contains("cannot be restored"))
        XCTAssertEqual(try kbuild(["ps:scale", "notesdb-postgres", "postgres=1"], dataDir: data).status, 0)
        try waitForNotes(routerPort, ["first", "second", "third", "fourth"], "the add-on back")
        let listed = try kbuild(["pg:backups", "notesdb"], dataDir: data).stdout
        XCTAssertTrue(listed.contains("b001") && listed.contains("verified") && listed.contains("b002") && listed.contains("FAILED"), listed)

        // Only attached apps reach it; attaching opens it, detaching closes it again.
        XCTAssertFalse(try reaches("notesbox", address, 5432), "an app not attached reached the database")
        XCTAssertTrue(try reaches("notesdb", address, 5432))
        XCTAssertFalse(try reaches("notesdb", address, 5433), "another port of the service address")
        let token = trimmed(try kbuild(["tokens:create", "notesbox-dev", "--app", "notesbox"], dataDir: data).stdout)
        let server = trimmed(try String(contentsOfFile: data + "/server.url", encoding: .utf8))
        let stolen = try sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer \(token)",
                                              "-d", #"{"addon":"notesdb-postgres"}"#, server + "/api/v1/apps/notesbox/attachments"])
        XCTAssertEqual(stolen.stdout, "404", "another tenant's token attached the database")
        let attach = try kbuild(["addons:attach", "notesdb-postgres", "--app", "notesbox", "--as", "NOTES"], dataDir: data)
        XCTAssertEqual(attach.status, 0, attach.stderr)
        XCTAssertTrue(try kbuild(["config:get", "notesbox", "NOTES_URL"], dataDir: data).stdout.contains(password))
        XCTAssertTrue(try reaches("notesbox", address, 5432), "attached, one database shared by two apps")
        XCTAssertTrue(try kbuild(["addons:attach", "notesdb-postgres", "--app", "notesbox", "--as", "NOTES"], dataDir: data).stderr.contains("NOTES_URL already"))
        XCTAssertEqual(try kbuild(["addons:detach", "NOTES", "--app", "notesbox"], dataDir: data).status, 0)
        XCTAssertFalse(try reaches("notesbox", address, 5432), "detached, still reached")

        // Redis, the same way: REDIS_URL, its password required, reached by its app only.
        let redis = try kbuild(["addons:create", "redis", "--app", "notesbox", "--stack", "debian-13-addons", "--size", "64M"], dataDir: data)
        XCTAssertEqual(redis.status, 0, redis.stderr)
        XCTAssertTrue(redis.stdout.contains("Created notesbox-redis: redis 8") && redis.stdout.contains("REDIS_URL"), redis.stdout)
        let redisURL = trimmed(try kbuild(["config:get", "notesbox", "REDIS_URL"], dataDir: data).stdout)
        let redisPassword = try XCTUnwrap(redisURL.split(separator: ":").dropFirst(2).first?.split(separator: "@").first.map(String.init), redisURL)
        let redisAddress = try XCTUnwrap(redisURL.split(separator: "@").last?.split(separator: ":").first.map(String.init))
        let ping = try run("notesbox", "printf 'PING\\r\\nAUTH default \(redisPassword)\\r\\nSET k v\\r\\nGET k\\r\\n' | nc -w 2 \(redisAddress) 6379")
        XCTAssertTrue(ping.stdout.contains("-NOAUTH") && ping.stdout.contains("+OK") && ping.stdout.contains("$1\r\nv"), ping.stdout + ping.stderr)
        XCTAssertFalse(try reaches("notesdb", redisAddress, 6379), "an app not attached reached Redis")
        XCTAssertEqual(try kbuild(["addons:destroy", "notesbox-redis", "--app", "notesbox", "--confirm", "notesbox-redis", "--force"], dataDir: data).status, 0)

        // The password is in the apps' config only: not in releases, logs or push output.
        for args in [["releases", "notesdb"], ["releases", "notesdb-postgres"], ["logs", "notesdb-postgres", "--lines", "10000"], ["logs", "notesdb", "--lines", "10000"]] {
            let r = try kbuild(args, dataDir: data)
            XCTAssertEqual(r.status, 0, "\(args): \(r.stderr)")
            XCTAssertFalse(r.stdout.contains(password), "\(args) shows the password")
        }
        XCTAssertFalse(push.stderr.contains(password) || second.stderr.contains(password))
        XCTAssertTrue(try kbuild(["ps", "notesdb-postgres"], dataDir: data).stdout.contains("postgres.1"), "the add-on's process is in ps")

        // Its app goes only with it, and its owner only after it.
        let direct = try kbuild(["apps:destroy", "notesdb-postgres", "--confirm", "notesdb-postgres", "--volumes"], dataDir: data)
        XCTAssertTrue(direct.stderr.contains("runs add-on notesdb-postgres of notesdb: destroy it with kbuild addons:destroy"), direct.stderr)
        let owner = try kbuild(["apps:destroy", "notesdb", "--confirm", "notesdb"], dataDir: data)
        XCTAssertTrue(owner.stderr.contains("has add-ons (notesdb-postgres)"), owner.stderr)

        // Destroying it while attached is refused; with --force it goes, with its volume and backups.
        let attached = try kbuild(["addons:destroy", "notesdb-postgres", "--app", "notesdb", "--confirm", "notesdb-postgres"], dataDir: data)
        XCTAssertTrue(attached.stderr.contains("is attached to notesdb as DATABASE"), attached.stderr)
        let destroyed = try kbuild(["addons:destroy", "notesdb-postgres", "--app", "notesdb", "--confirm", "notesdb-postgres", "--force"], dataDir: data)
        XCTAssertEqual(destroyed.status, 0, destroyed.stderr)
        XCTAssertTrue(try kbuild(["config:get", "notesdb", "DATABASE_URL"], dataDir: data).stdout.isEmpty)
        try waitUntil("the add-on's volume deleted") { trimmed(try kbuild(["ref", "ls", "volumes/notesdb-postgres/"], dataDir: data).stdout).isEmpty }
        XCTAssertTrue(trimmed(try kbuild(["ref", "ls", "backups/notesdb-postgres/"], dataDir: data).stdout).isEmpty, "its backups stayed")
    }

    /// The host's processes of an app (by KBUILD_APP in their environment), with their command lines.
    func hostProcesses(app: String) -> [(pid: Int32, cmdline: String)] {
        var out: [(Int32, String)] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(name), let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
                  env.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == "KBUILD_APP=\(app)" }),
                  let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
            out.append((pid, String(decoding: cmd, as: UTF8.self)))
        }
        return out
    }
}
