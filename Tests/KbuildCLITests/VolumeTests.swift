import Foundation
import XCTest

/// Volumes end to end through `kbuild up`: a real loop-mounted ext4 volume on
/// the node, an app that writes to it at every start, and the data across
/// restarts, a redeploy, a rollback, kill -9 and a restart of `kbuild up`.
final class VolumeTests: XCTestCase {
    /// The app's web process appends its release to /data/boots at each start and serves the file.
    static let serve = """
        #!/bin/sh
        if [ -d /data ]; then echo "$KBUILD_RELEASE" >> /data/boots; cp /data/boots www/boots.txt; ls -lnd /data | awk '{print $3}' > www/owner.txt; fi
        exec busybox httpd -f -p "0.0.0.0:$PORT" -h www
        """

    func boots(_ app: String, _ data: String, release: Int64, count: Int) throws -> [String] {
        var lines: [String] = []
        try waitUntil("\(app) v\(release) healthy with \(count) boots", timeout: 60) {
            let procs = try ps(app, data)
            guard healthy(procs, count: 1, release: release), let text = get(procs[0], "/boots.txt") else { return false }
            lines = text.split(separator: "\n").map(String.init)
            return lines.count == count
        }
        return lines
    }

    func testAVolumeKeepsAnAppsDataAcrossRestartsRedeploysRollbacksAndKbuildUpRestarts() throws {
        let data = try makeData("volumes")
        var server = try startKbuildUp(self, data: data, extra: ["--node-memory", "2G"])
        let work = try makeApp("notes", data: data, serve: Self.serve)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)

        // Bad input: each refused with the reason, and nothing made.
        for (args, message) in [(["volumes:create", "notes", "pg", "--size", "0"], "at least 16M"),
                                (["volumes:create", "notes", "pg", "--size", "100000T"], "at most 65536G"),
                                (["volumes:create", "notes", "pg", "--size=-1G"], "--size"),
                                (["volumes:create", "notes", "pg", "--size", "60T"], "it may have 10G (kbuild apps:limits notes --volumes SIZE)"),
                                (["volumes:create", "notes", "Bad_Name", "--size", "64M"], "invalid volume name"),
                                (["volumes:create", "nosuch", "pg", "--size", "64M"], "nosuch"),
                                (["volumes:create", "notes", "pg", "--size", "64M", "--node", "elsewhere"], "no node \"elsewhere\""),
                                (["volumes:mount", "notes", "nosuch", "/data"], "has no volume nosuch")] {
            let r = try kbuild(args, dataDir: data)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        XCTAssertTrue(try kbuild(["volumes", "notes"], dataDir: data).stdout.contains("no volumes"))
        // Past what the node has, once the app's limit allows it.
        XCTAssertEqual(try kbuild(["apps:limits", "notes", "--volumes", "2000T"], dataDir: data).status, 0)
        let huge = try kbuild(["volumes:create", "notes", "pg", "--size", "60T"], dataDir: data)
        XCTAssertTrue(huge.stderr.contains("a volume of 61440G does not fit: the most any node has for volumes is"), huge.stderr)

        let made = try kbuild(["volumes:create", "notes", "data", "--size", "64M"], dataDir: data)
        XCTAssertEqual(made.status, 0, made.stderr)
        XCTAssertTrue(made.stdout.contains("Created volume data of notes: 64M on node local (ready)"), made.stdout)
        XCTAssertTrue(try kbuild(["volumes:create", "notes", "data", "--size", "64M"], dataDir: data).stderr.contains("has a volume data already"))
        for (path, message) in [("data", "must be absolute"), ("/", "whole file system"), ("/app", "app's code"), ("/proc/x", "/proc is the sandbox's own")] {
            let r = try kbuild(["volumes:mount", "notes", "data", path], dataDir: data)
            XCTAssertNotEqual(r.status, 0, path)
            XCTAssertTrue(r.stderr.contains(message), "\(path): \(r.stderr)")
        }
        let mount = try kbuild(["volumes:mount", "notes", "data", "/data"], dataDir: data)
        XCTAssertEqual(mount.status, 0, mount.stderr)
        XCTAssertTrue(mount.stdout.contains("Mounted data at /data in notes: v2"), mount.stdout)
        XCTAssertEqual(try boots("notes", data, release: 2, count: 1), ["v2"])
        let proc = try ps("notes", data)[0]
        XCTAssertEqual(get(proc, "/owner.txt"), "0\n", "root inside owns the volume")
        let info = try kbuild(["volumes:info", "notes", "data"], dataDir: data).stdout
        XCTAssertTrue(info.contains("State:    ready") && info.contains("/data (every process type)"), info)
        XCTAssertTrue(try kbuild(["volumes:mount", "notes", "data", "/other"], dataDir: data).stderr.contains("mounted at /data already"))

        // A formation the volume's node cannot hold is refused, naming the volume; one it can, runs.
        let scale = try kbuild(["ps:scale", "notes", "web=5"], dataDir: data)
        XCTAssertNotEqual(scale.status, 0)
        XCTAssertTrue(scale.stderr.contains("mounts volume data") && scale.stderr.contains("node local"), scale.stderr)

        // ps:restart, a redeploy and a rollback to the release before the mount: the data stays, the volume stays mounted.
        XCTAssertEqual(try kbuild(["ps:restart", "notes"], dataDir: data).status, 0)
        XCTAssertEqual(try boots("notes", data, release: 2, count: 2), ["v2", "v2"])
        try writeFile(work + "/www/index.html", "second\n")
        try git(["commit", "-qam", "Second"], in: work)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        XCTAssertEqual(try boots("notes", data, release: 3, count: 3), ["v2", "v2", "v3"])
        let rollback = try kbuild(["releases:rollback", "notes", "v1"], dataDir: data)
        XCTAssertEqual(rollback.status, 0, rollback.stderr)
        XCTAssertEqual(try boots("notes", data, release: 4, count: 4).last, "v4", "a rollback keeps the volume mounted")

        // Destroying what is mounted, or the app with it, is refused.
        let busy = try kbuild(["volumes:destroy", "notes", "data", "--confirm", "data"], dataDir: data)
        XCTAssertTrue(busy.stderr.contains("is mounted at /data"), busy.stderr)
        let destroyApp = try kbuild(["apps:destroy", "notes", "--confirm", "notes"], dataDir: data)
        XCTAssertTrue(destroyApp.stderr.contains("has volumes (data)"), destroyApp.stderr)

        // kill -9 of kbuild up, then a new one: the process is adopted, the data is there.
        kill(server.process.processIdentifier, SIGKILL)
        server.process.waitUntilExit()
        server = try startKbuildUp(self, data: data, extra: ["--node-memory", "2G"])
        XCTAssertEqual(try boots("notes", data, release: 4, count: 4).count, 4)
        // kbuild down unmounts it; the next kbuild up mounts it again and the process starts on it.
        kill(server.process.processIdentifier, SIGTERM)
        server.process.waitUntilExit()
        XCTAssertEqual(try kbuild(["down", "--grace", "1"], dataDir: data).status, 0)
        XCTAssertFalse(try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8).contains(data), "kbuild down leaves no mount")
        server = try startKbuildUp(self, data: data, extra: ["--node-memory", "2G"])
        XCTAssertEqual(try boots("notes", data, release: 4, count: 5).last, "v4")

        // Unmounted and destroyed: its disk is gone from the node.
        XCTAssertTrue(try kbuild(["volumes:unmount", "notes", "data"], dataDir: data).stdout.contains("Unmounted data from notes: v5"))
        // Refused until the release without it has rolled out (a revert would go back to the one with it).
        var destroyed = try kbuild(["volumes:destroy", "notes", "data", "--confirm", "data"], dataDir: data)
        try waitUntil("v5 rolled out, so the volume can go") {
            if destroyed.status == 0 { return true }
            XCTAssertTrue(destroyed.stderr.contains("let that release roll out"), destroyed.stderr)
            destroyed = try kbuild(["volumes:destroy", "notes", "data", "--confirm", "data"], dataDir: data)
            return destroyed.status == 0
        }
        XCTAssertTrue(destroyed.stdout.contains("Destroyed volume data of notes"), destroyed.stdout)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: data + "/nodes/local/volumes"), [])
        XCTAssertTrue(try kbuild(["volumes", "notes"], dataDir: data).stdout.contains("no volumes"))

        // An app with a volume is destroyed with it only when told.
        XCTAssertEqual(try kbuild(["volumes:create", "notes", "more", "--size", "32M"], dataDir: data).status, 0)
        let all = try kbuild(["apps:destroy", "notes", "--confirm", "notes", "--volumes"], dataDir: data)
        XCTAssertEqual(all.status, 0, all.stderr)
        try waitUntil("the destroyed app's volume deleted on its node") {
            let left = try FileManager.default.contentsOfDirectory(atPath: data + "/nodes/local/volumes")
            let refs = trimmed(try kbuild(["ref", "ls", "volumes/"], dataDir: data).stdout)
            return left.isEmpty && refs.isEmpty
        }
        XCTAssertFalse(try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8).contains(data + "/nodes/local/volumes"))
    }
}
