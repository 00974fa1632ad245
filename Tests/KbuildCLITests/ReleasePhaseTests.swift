import Foundation
import XCTest

/// The release phase: a Procfile's `release:` command runs once per release
/// made by a deploy, a config change or a rollback, before any of the
/// release's processes start; a failure or a hang past its timeout rejects
/// the push and leaves what runs running.
final class ReleasePhaseTests: XCTestCase {
    func testTheReleaseCommandRunsBeforeTheProcessesAndAFailureChangesNothing() throws {
        let data = try makeData("release-phase")
        let routerPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        let kb = { (args: [String]) throws -> Result in try sh(kbuildBinary, args, env: ["KBUILD_DATA_DIR": data]) }
        let work = try makeApp("migrate", data: data, serve: """
            #!/bin/sh
            date +%s > www/started.txt
            exec busybox httpd -f -p "0.0.0.0:$PORT" -h www
            """, files: [
                "Procfile": "web: ./serve.sh\nrelease: ./release.sh\n",
                "release.sh": "#!/bin/sh\necho \"migrating $KBUILD_RELEASE with FOO=$FOO at $(date +%s)\"\nsleep 1\necho migrated\n",
            ])
        let first = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(first.status, 0, first.stderr)
        for line in ["Running the release command: ./release.sh", "migrating v1 with FOO=", "migrated", "The release command succeeded", "v1 is live"] {
            XCTAssertTrue(first.stderr.contains(line), "\(line): \(first.stderr)")
        }
        // Before any of its processes: the web process started after the command ended.
        let output = try kb(["releases:output", "migrate", "v1"])
        XCTAssertEqual(output.status, 0, output.stderr)
        XCTAssertTrue(output.stdout.contains("succeeded") && output.stdout.contains("migrated"), output.stdout)
        let ranAt = try XCTUnwrap(output.stdout.split(separator: " ").last(where: { Int($0.prefix(10)) != nil }).flatMap { Int($0.prefix(10)) })
        let web = routed(routerPort, host: "migrate.localhost", path: "/started.txt")
        XCTAssertEqual(web.status, 200)
        XCTAssertGreaterThanOrEqual(Int(trimmed(web.body)) ?? 0, ranAt + 1, "web started \(web.body), the release command at \(ranAt)")
        let pid = try XCTUnwrap(try ps("migrate", data).first?.hostPID)

        // A config change runs it again, with the new config; a scale does not.
        XCTAssertEqual(try kb(["config:set", "migrate", "FOO=bar"]).status, 0)
        try waitUntil("v2's release phase ran") { (try? kb(["releases:output", "migrate", "v2"]))?.stdout.contains("migrating v2 with FOO=bar") == true }
        try waitUntil("v2 is live") { (try? ps("migrate", data)).map { healthy($0, count: 1, release: 2) } == true }
        XCTAssertEqual(try kb(["ps:scale", "migrate", "web=1"]).status, 0)  // v3: a scale
        let scaled = try kb(["releases:output", "migrate", "v3"])
        XCTAssertNotEqual(scaled.status, 0)
        XCTAssertTrue(scaled.stderr.contains("it was not made by a deploy, config change or rollback"), scaled.stderr)
        let release = try kb(["ps:scale", "migrate", "release=1"])
        XCTAssertNotEqual(release.status, 0)
        XCTAssertTrue(release.stderr.contains("not a process type to scale"), release.stderr)
        let running = try XCTUnwrap(try ps("migrate", data).first?.hostPID)

        // A release command that fails: the push is rejected, nothing that runs changes.
        try writeFile(work + "/release.sh", "#!/bin/sh\necho 'relation users does not exist' >&2\nexit 3\n", mode: 0o755)
        try git(["commit", "-q", "-am", "failing migration"], in: work)
        let failed = try git(["push", "kbuild", "main"], in: work)
        XCTAssertNotEqual(failed.status, 0, failed.stderr)
        XCTAssertTrue(failed.stderr.contains("relation users does not exist"), failed.stderr)
        XCTAssertTrue(failed.stderr.contains("the release command of v4 failed (exit status 3)"), failed.stderr)
        try waitUntil("v4 reverted") { (try? kb(["releases", "migrate"]))?.stdout.contains("Revert to v3") == true }
        XCTAssertEqual(try ps("migrate", data).first?.hostPID, running, "the running process was never touched")
        XCTAssertEqual(routed(routerPort, host: "migrate.localhost").status, 200)

        // One that hangs past its timeout (RELEASE_PHASE_TIMEOUT): the same.
        let timeout = try kb(["config:set", "migrate", "RELEASE_PHASE_TIMEOUT=2"])
        XCTAssertEqual(timeout.status, 0, timeout.stderr)
        try writeFile(work + "/release.sh", "#!/bin/sh\necho waiting for a lock\nsleep 600\n", mode: 0o755)
        try git(["commit", "-q", "-am", "hanging migration"], in: work)
        let started = Date()
        let hung = try git(["push", "kbuild", "main"], in: work)
        XCTAssertNotEqual(hung.status, 0, hung.stderr)
        XCTAssertTrue(hung.stderr.contains("it ran past its timeout of 2 s (RELEASE_PHASE_TIMEOUT)"), hung.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(started), 60)
        XCTAssertEqual(routed(routerPort, host: "migrate.localhost").status, 200)
        XCTAssertNotEqual(try ps("migrate", data).first?.hostPID, nil)
        _ = pid
    }
}
