import Foundation
import XCTest

/// Add-ons end to end, on the shared Debian stack and its add-on stack
/// (debian-13-addons: Debian's PostgreSQL 17): a Flask app with SQLAlchemy
/// over psycopg, built with pip from PyPI, that migrates in its release phase
/// and keeps its rows across a restart, a redeploy, a rollback and a kill -9
/// of PostgreSQL; the add-on reached over TLS by the apps attached to it and
/// by no other; its password in no release, log or push output.
final class StatefulAddonTests: XCTestCase {
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

    /// psql beside an app's PostgreSQL add-on (`pg:psql APP [NAME] -c SQL`), its output unaligned.
    func psql(_ app: String, _ sql: String, on name: String? = nil) throws -> Result {
        try kbuild(["pg:psql", app] + (name.map { [$0] } ?? []) + ["-c", sql], dataDir: data)
    }

    /// The second life of an add-on, on PostgreSQL 15 (debian-12-addons) moved to 17 (debian-13-addons): scheduled
    /// backups, an imported dump, Redis snapshots, a new password, and the upgrade, each with its bad input.
    func testScheduledImportedAndRedisBackupsRotatedCredentialsAndAnUpgradeFrom15To17() throws {
        let made = try XCTUnwrap(SharedStacks.debian12, "kbuild stack create did not run")
        XCTAssertEqual(made.status, 0, made.stderr)
        let data = self.data
        var up = try startKbuildUp(self, data: data, extra: ["--node-cpus", "8"])
        XCTAssertEqual(try kbuild(["apps:create", "ledger", "--stack", "debian-12"], dataDir: data).status, 0)
        XCTAssertEqual(try kbuild(["apps:create", "ledgerpeer", "--stack", "debian-12"], dataDir: data).status, 0)
        // What it made goes before its kbuild up stops (teardown blocks run last first: registered again after a restart).
        let cleanUp = {
            for (addon, owner) in [("ledger-postgres-2", "ledger"), ("ledger-postgres", "ledger"), ("ledger-redis", "ledger"), ("ledgerpeer-postgres", "ledgerpeer")] {
                _ = try? sh(kbuildBinary, ["addons:destroy", addon, "--app", owner, "--confirm", addon, "--force"], env: ["KBUILD_DATA_DIR": data])
            }
            for app in ["ledger", "ledgerpeer"] { _ = try? sh(kbuildBinary, ["apps:destroy", app, "--confirm", app, "--volumes"], env: ["KBUILD_DATA_DIR": data]) }
        }
        addTeardownBlock(cleanUp)
        let created = try kbuild(["addons:create", "postgres", "--app", "ledger", "--stack", "debian-12-addons"], dataDir: data)
        XCTAssertEqual(created.status, 0, created.stderr)
        XCTAssertTrue(created.stdout.contains("Created ledger-postgres: postgres 15, healthy"), created.stdout)
        XCTAssertEqual(try kbuild(["addons:attach", "ledger-postgres", "--app", "ledgerpeer", "--as", "LEDGER"], dataDir: data).status, 0)
        let made15 = try psql("ledger", "create table entries (n int primary key); insert into entries values (1), (2)")
        XCTAssertEqual(made15.status, 0, made15.stderr)

        // A schedule that does not parse, and a --keep out of range: refused with the reason, nothing set.
        for (at, keep, message) in [("25:00", nil, "no such time of day"), ("2am", nil, "not a time of day"),
                                    ("02:00 Mars/Olympus", nil, "unknown time zone \"Mars/Olympus\""), ("02:00", "0", "invalid --keep 0")] as [(String, String?, String)] {
            let r = try kbuild(["pg:backups:schedule", "ledger", "--at", at] + (keep.map { ["--keep", $0] } ?? []), dataDir: data)
            XCTAssertNotEqual(r.status, 0, at)
            XCTAssertTrue(r.stderr.contains(message), "\(at): \(r.stderr)")
        }
        var server = up.url
        let admin = trimmed(try String(contentsOfFile: data + "/admin.token", encoding: .utf8))
        let direct = try sh("/usr/bin/curl", ["-s", "-X", "PUT", "-H", "Authorization: Bearer \(admin)", "-d", #"{"at":"7pm"}"#,
                                              server + "/api/v1/apps/ledger/addons/ledger-postgres/schedule"])
        XCTAssertTrue(direct.stdout.contains(#"invalid backup schedule \"7pm\""#), "the server checks too: \(direct.stdout)")
        XCTAssertFalse(try kbuild(["addons:info", "ledger", "ledger-postgres"], dataDir: data).stdout.contains("Backups:"), "a refused schedule was set")

        // Daily at the current minute (UTC): kbuild up takes one within its 20 s pass, verified, as the schedule's.
        var clock = Date()
        if Calendar(identifier: .gregorian).component(.second, from: clock) > 45 { Thread.sleep(forTimeInterval: 16); clock = Date() }
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        let at = String(format: "%02d:%02d", utc.component(.hour, from: clock), utc.component(.minute, from: clock))
        let scheduled = try kbuild(["pg:backups:schedule", "ledger", "--at", at, "--keep", "3"], dataDir: data)
        XCTAssertEqual(scheduled.status, 0, scheduled.stderr)
        XCTAssertTrue(scheduled.stdout.contains("at \(at) UTC, the newest 3 kept"), scheduled.stdout)
        try waitUntil("a scheduled backup", timeout: 90) {
            try kbuild(["pg:backups", "ledger"], dataDir: data).stdout.contains("verified  by schedule (schedule)")
        }
        let listed = try kbuild(["pg:backups", "ledger"], dataDir: data).stdout
        XCTAssertTrue(listed.contains("Scheduled daily at \(at) UTC, the newest 3 kept") && listed.contains("b001"), listed)
        // An app attached to it, not its owner, may take backups but not delete them, change the schedule, import or restore.
        let peerToken = trimmed(try kbuild(["tokens:create", "peer", "--app", "ledgerpeer"], dataDir: data).stdout)
        let addonPath = server + "/api/v1/apps/ledgerpeer/addons/ledger-postgres"
        for (method, path, body) in [("DELETE", "/backups/b001?confirm=ledger-postgres", ""), ("PUT", "/schedule", #"{"at":"04:00","keep":1}"#),
                                     ("DELETE", "/schedule", ""), ("POST", "/backups/import", "PGDMP"),
                                     ("POST", "/backups/b001/restore?confirm=ledger-postgres", "{}"), ("POST", "/credentials", "{}")] {
            let r = try sh("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", method, "-H", "Authorization: Bearer \(peerToken)", "--data-binary", body,
                                             addonPath + path])
            XCTAssertTrue(r.stdout.hasSuffix("\n403") && r.stdout.contains("only its owner may"), "\(method) \(path): \(r.stdout)")
        }
        XCTAssertTrue(try kbuild(["pg:backups", "ledger"], dataDir: data).stdout.contains("Scheduled daily at \(at) UTC, the newest 3 kept"), "a refused change")
        // pg:psql from another machine with the owner app's token (not the admin's); the attached app's token does not get it.
        let ownerToken = trimmed(try kbuild(["tokens:create", "owner", "--app", "ledger"], dataDir: data).stdout)
        let remote = ["HOME": try tempDir(self, "ledger-home"), "KBUILD_URL": server]
        let owned = try sh(kbuildBinary, ["pg:psql", "ledger", "-c", "select 'from the owner'"], env: remote.merging(["KBUILD_TOKEN": ownerToken]) { $1 })
        XCTAssertTrue(owned.stdout.contains("from the owner"), owned.stdout + owned.stderr)
        let peerPsql = try sh("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "Authorization: Bearer \(peerToken)",
                                                "-d", #"{"command":["true"]}"#, addonPath + "/run"])
        XCTAssertTrue(peerPsql.stdout.hasSuffix("\n403"), "an attached app ran a command beside the owner's add-on: \(peerPsql.stdout)")
        XCTAssertEqual(try kbuild(["pg:backups:unschedule", "ledger"], dataDir: data).status, 0)
        XCTAssertFalse(try kbuild(["pg:backups", "ledger"], dataDir: data).stdout.contains("Scheduled"))

        // A dump file imported: stored and test-restored as a capture is, then restored. A file that is not one is refused.
        let work = try tempDir(self, "ledger")
        XCTAssertEqual(try kbuild(["pg:backups:download", "ledger", "b001", "-o", work + "/b001.dump"], dataDir: data).status, 0)
        try writeFile(work + "/notes.txt", "not a dump\n")
        for (file, message) in [(work + "/notes.txt", "is not a pg_dump custom-format file"), (work + "/nosuch.dump", "failed to open")] {
            let r = try kbuild(["pg:backups:import", "ledger", file], dataDir: data)
            XCTAssertNotEqual(r.status, 0, file)
            XCTAssertTrue(r.stderr.contains(message), "\(file): \(r.stderr)")
        }
        let sneaked = try sh("/usr/bin/curl", ["-s", "-X", "POST", "-H", "Authorization: Bearer \(admin)", "--data-binary", "@" + work + "/notes.txt",
                                               server + "/api/v1/apps/ledger/addons/ledger-postgres/backups/import"])
        XCTAssertTrue(sneaked.stdout.contains("not a pg_dump custom-format file"), sneaked.stdout)
        XCTAssertEqual(try psql("ledger", "insert into entries values (3)").status, 0)
        let imported = try kbuild(["pg:backups:import", "ledger", work + "/b001.dump"], dataDir: data)
        XCTAssertEqual(imported.status, 0, imported.stderr)
        XCTAssertTrue(imported.stdout.contains("b002") && imported.stdout.contains("verified") && imported.stdout.contains("(import)"), imported.stdout)
        XCTAssertFalse(try kbuild(["pg:backups", "ledger"], dataDir: data).stdout.contains("b003"), "a refused import left a backup")
        XCTAssertEqual(try kbuild(["pg:backups:restore", "ledger", "b002", "--confirm", "ledger-postgres"], dataDir: data).status, 0)
        XCTAssertTrue(try psql("ledger", "select string_agg(n::text, ',' order by n) from entries").stdout.contains("1,2\n"))

        // Redis: an RDB snapshot, loaded whole before it counts; not a PostgreSQL backup, whatever names it.
        let redis = try kbuild(["addons:create", "redis", "--app", "ledger", "--stack", "debian-12-addons", "--size", "64M"], dataDir: data)
        XCTAssertEqual(redis.status, 0, redis.stderr)
        XCTAssertTrue(redis.stdout.contains("Created ledger-redis: redis 7"), redis.stdout)
        let redisURL = trimmed(try kbuild(["config:get", "ledger", "REDIS_URL"], dataDir: data).stdout)
        let redisAddress = try XCTUnwrap(redisURL.split(separator: "@").last?.split(separator: ":").first.map(String.init))
        let set = try sh(kbuildBinary, ["run", "ledger-redis", "-n", "--", "sh", "-c",
                                        "for k in a b c; do REDISCLI_AUTH=\"$KBUILD_ADDON_PASSWORD\" redis-cli -h \(redisAddress) set $k v-$k; done"],
                         env: ["KBUILD_DATA_DIR": data])
        XCTAssertEqual(set.stdout, "OK\nOK\nOK\n", set.stderr)
        let snapshot = try kbuild(["redis:backups:capture", "ledger"], dataDir: data)
        XCTAssertEqual(snapshot.status, 0, snapshot.stderr)
        XCTAssertTrue(snapshot.stdout.contains("b001") && snapshot.stdout.contains("3 keys") && snapshot.stdout.contains("verified"), snapshot.stdout)
        let rdb = try XCTUnwrap(snapshot.stdout.split(separator: "\n").first { $0.hasPrefix("Snapshot K-") }?.dropFirst("Snapshot ".count))
        XCTAssertTrue(try kbuild(["redis:backups", "ledger"], dataDir: data).stdout.contains("b001"))
        XCTAssertEqual(try kbuild(["pg:backups:download", "ledger", "b001", "ledger-redis", "-o", work + "/r.rdb"], dataDir: data).status, 0,
                       "pg:backups:download names the Redis add-on")
        for (backup, message) in [(String(rdb.prefix(12)), "is a redis backup (of ledger-redis), not a postgres one"),
                                  ("K-" + String(repeating: "0", count: 64), "is not a backup of any add-on ledger has"),
                                  ("yesterday", "invalid backup \"yesterday\"")] {
            let r = try kbuild(["pg:backups:restore", "ledger", backup, "--confirm", "ledger-postgres"], dataDir: data)
            XCTAssertNotEqual(r.status, 0, backup)
            XCTAssertTrue(r.stderr.contains(message), "\(backup): \(r.stderr)")
        }
        XCTAssertTrue(try psql("ledger", "select count(*) from entries").stdout.contains("2"), "a refused restore changed the data")

        // Faults. A full volume: the write fails inside with ENOSPC and PostgreSQL says so; it keeps serving, unrestarted.
        let small = try kbuild(["addons:create", "postgres", "--app", "ledgerpeer", "--as", "SMALL", "--size", "64M", "--stack", "debian-12-addons"], dataDir: data)
        XCTAssertEqual(small.status, 0, small.stderr)
        try waitUntil("the small add-on healthy", timeout: 60) { (try ps("ledgerpeer-postgres", data)).contains { $0.state == "healthy" } }
        let fill = try psql("ledgerpeer", "create table filler as select repeat(md5(g::text), 30) as pad from generate_series(1, 200000) g", on: "SMALL")
        XCTAssertNotEqual(fill.status, 0, fill.stdout)
        XCTAssertTrue(fill.stderr.contains("No space left on device"), fill.stderr)
        XCTAssertTrue(try psql("ledgerpeer", "select 'still serving'", on: "SMALL").stdout.contains("still serving"))
        XCTAssertEqual(try ps("ledgerpeer-postgres", data).first?.restarts, 0, "the full volume restarted PostgreSQL")
        let smallLog = try kbuild(["logs", "ledgerpeer-postgres", "--lines", "10000"], dataDir: data).stdout
        XCTAssertTrue(smallLog.contains("No space left on device") && !smallLog.contains("PANIC") && !smallLog.contains("reinitializing"),
                      "PostgreSQL crashed on the full volume: \(smallLog.suffix(1500))")
        XCTAssertEqual(try kbuild(["addons:destroy", "ledgerpeer-postgres", "--app", "ledgerpeer", "--confirm", "ledgerpeer-postgres", "--force"],
                                  dataDir: data).status, 0)
        // kill -9 of kbuild up (its agent with it): PostgreSQL keeps running; the next kbuild up adopts it, data and all.
        let postmaster = try XCTUnwrap(hostProcesses(app: "ledger-postgres").first { $0.cmdline.contains("-D\u{0}/data/postgres") }, "no postgres process")
        kill(up.process.processIdentifier, SIGKILL)
        up.process.waitUntilExit()
        Thread.sleep(forTimeInterval: 2)
        XCTAssertEqual(kill(postmaster.pid, 0), 0, "PostgreSQL died with kbuild up")
        up = try startKbuildUp(self, data: data, extra: ["--node-cpus", "8"])
        addTeardownBlock(cleanUp)
        server = up.url
        let counted = try psql("ledger", "select count(*) from entries").stdout
        XCTAssertTrue(counted.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.contains("2"), "the data after kbuild up came back: \(counted)")
        XCTAssertEqual(hostProcesses(app: "ledger-postgres").first { $0.cmdline.contains("-D\u{0}/data/postgres") }?.pid, postmaster.pid,
                       "the same PostgreSQL, adopted, not restarted")

        // A new password: the add-on restarts with it, each attached app gets the new URL, the old one no longer logs in.
        let oldURL = trimmed(try kbuild(["config:get", "ledgerpeer", "LEDGER_URL"], dataDir: data).stdout)
        let oldPassword = try XCTUnwrap(oldURL.split(separator: ":").dropFirst(2).first?.split(separator: "@").first.map(String.init))
        let notOwner = try sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer \(peerToken)",
                                                "-d", "{}", server + "/api/v1/apps/ledgerpeer/addons/ledger-postgres/credentials"])
        XCTAssertEqual(notOwner.stdout, "403", "an app attached to it, not its owner, rotated its password")
        let rotated = try kbuild(["addons:rotate-credentials", "ledger", "DATABASE"], dataDir: data)
        XCTAssertEqual(rotated.status, 0, rotated.stderr)
        let newURL = trimmed(try kbuild(["config:get", "ledgerpeer", "LEDGER_URL"], dataDir: data).stdout)
        XCTAssertNotEqual(newURL, oldURL)
        XCTAssertEqual(trimmed(try kbuild(["config:get", "ledger", "DATABASE_URL"], dataDir: data).stdout), newURL)
        XCTAssertTrue(try kbuild(["releases", "ledger-postgres"], dataDir: data).stdout.contains("Rotate the password"), "the add-on's new release")
        try waitUntil("the add-on serving with its new password", timeout: 60) {
            try self.psql("ledger", "select count(*) from entries").stdout.contains("2")
        }
        let stale = try sh(kbuildBinary, ["run", "ledger-postgres", "-n", "--", "sh", "-c",
                                          "PGPASSWORD=\(oldPassword) PGSSLMODE=require psql -h \(try XCTUnwrap(newURL.split(separator: "@").last?.split(separator: ":").first)) -U kbuild -c 'select 1' kbuild"],
                           env: ["KBUILD_DATA_DIR": data])
        XCTAssertTrue(stale.stderr.contains("password authentication failed"), stale.stdout + stale.stderr)

        // The upgrade: bad input first, then 15 → 17 with the data, the attachments switched, the old one kept read-only.
        XCTAssertEqual(try kbuild(["pg:backups:schedule", "ledger", "--at", "03:00"], dataDir: data).status, 0)
        for (args, message) in [(["addons:upgrade", "ledger", "--version", "14"], "an upgrade goes to a later major version, not 14"),
                                (["addons:upgrade", "ledger", "--version", "16"], "no add-on stack here has PostgreSQL 16"),
                                (["addons:upgrade", "ledger", "--version", "seventeen"], "invalid --version \"seventeen\""),
                                (["addons:upgrade", "ledger", "NOSUCH", "--version", "17"], "ledger has no PostgreSQL add-on NOSUCH")] {
            let r = try kbuild(args, dataDir: data)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        let redisUpgrade = try sh("/usr/bin/curl", ["-s", "-X", "POST", "-H", "Authorization: Bearer \(admin)", "-d", #"{"version":"8"}"#,
                                                    server + "/api/v1/apps/ledger/addons/ledger-redis/upgrade"])
        XCTAssertTrue(redisUpgrade.stdout.contains("addons:upgrade moves PostgreSQL"), redisUpgrade.stdout)
        XCTAssertTrue(trimmed(try kbuild(["ref", "ls", "addons/ledger-postgres-2"], dataDir: data).stdout).isEmpty, "a refused upgrade made an add-on")
        let upgraded = try kbuild(["addons:upgrade", "ledger", "DATABASE", "--version", "17"], dataDir: data)
        XCTAssertEqual(upgraded.status, 0, upgraded.stderr)
        XCTAssertTrue(upgraded.stdout.contains("Upgraded ledger-postgres (PostgreSQL 15) to ledger-postgres-2 (PostgreSQL 17), healthy"), upgraded.stdout)
        let version = try psql("ledger", "select current_setting('server_version_num')::int / 10000, string_agg(n::text, ',' order by n) from entries")
        XCTAssertTrue(version.stdout.contains("17 | 1,2"), version.stdout + version.stderr)
        let upgradedURL = trimmed(try kbuild(["config:get", "ledgerpeer", "LEDGER_URL"], dataDir: data).stdout)
        XCTAssertNotEqual(upgradedURL, newURL, "the attachment of another app moved too")
        let info = try kbuild(["addons:info", "ledger", "ledger-postgres-2"], dataDir: data).stdout
        XCTAssertTrue(info.contains("ledger as DATABASE_URL") && info.contains("ledgerpeer as LEDGER_URL") && info.contains("Backups:   daily at 03:00 UTC")
                      && info.contains("Upgraded:  from ledger-postgres"), info)
        let old = try kbuild(["addons:info", "ledger", "ledger-postgres"], dataDir: data).stdout
        XCTAssertTrue(old.contains("Attached:  nothing") && old.contains("postgres 15"), old)
        let readOnly = try psql("ledger", "insert into entries values (9)", on: "ledger-postgres")
        XCTAssertTrue(readOnly.stderr.contains("read-only transaction"), "the old instance took a write: \(readOnly.stdout) \(readOnly.stderr)")
        XCTAssertTrue(try kbuild(["pg:backups", "ledger", "ledger-postgres"], dataDir: data).stdout.contains("(upgrade)"), "the backup the upgrade took")
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
