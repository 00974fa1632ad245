import Foundation
import XCTest

/// `kbuild stack` and `kbuild sandbox run` as users run them, and the stacks' OCI images with skopeo, umoci and runc.
final class SandboxCLITests: XCTestCase {
    /// The test run's data dir with the busybox and Debian stacks.
    static var data: String { SharedStacks.data }

    func run(_ args: [String]) throws -> Result {
        try sh(kbuildBinary, args, env: ["KBUILD_DATA_DIR": SandboxCLITests.data])
    }

    static var debian: Result? { SharedStacks.debian }

    func testDebianStackRunsPython() throws {
        let create = try XCTUnwrap(SandboxCLITests.debian)
        XCTAssertEqual(create.status, 0, create.stderr + create.stdout)
        let py = try run(["sandbox", "run", "--stack", "debian", "--", "python3", "-c", "print(1)"])
        XCTAssertEqual(py.status, 0, py.stderr)
        XCTAssertEqual(py.stdout, "1\n")
        let certs = try run(["sandbox", "run", "--stack", "debian", "--", "sh", "-c", "ls /etc/ssl/certs | grep -c pem; ls /var/lib/apt/lists | wc -l"])
        let counts = certs.stdout.split(separator: "\n").compactMap { Int($0) }
        XCTAssertGreaterThan(counts.first ?? 0, 50, "ca-certificates installed: \(certs.stdout)")
        XCTAssertEqual(counts.last, 0, "apt lists removed: \(certs.stdout)")
    }

    /// Same packages in, same KIDs out: a second `stack create debian` in a
    /// data dir of its own makes the run and build images the test run's made
    /// (a minute or two: the .debs are cached). It could fail only if the
    /// mirror published a package between the two creates.
    func testTwoCreatesOfTheDebianStackMakeTheSameKIDs() throws {
        let create = try XCTUnwrap(SandboxCLITests.debian)
        XCTAssertEqual(create.status, 0, create.stderr + create.stdout)
        let other = try tempDir(self, "stack-again")
        let again = try sh(kbuildBinary, ["stack", "create", "debian"], env: ["KBUILD_DATA_DIR": other])
        XCTAssertEqual(again.status, 0, again.stderr + again.stdout)
        func images(_ data: String) throws -> [String: String] {
            var out: [String: String] = [:]
            for line in try sh(kbuildBinary, ["stack", "ls"], env: ["KBUILD_DATA_DIR": data]).stdout.split(separator: "\n") {
                let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).map(String.init)
                // The run and build images of debian-13 (the test run's data dir also has debian-12 and the add-on stacks).
                if fields.count >= 2, fields[0].hasPrefix("debian-13"), !fields[0].hasSuffix("-addons") { out[fields[0]] = fields[1] }
            }
            return out
        }
        let first = try images(SandboxCLITests.data), second = try images(other)
        XCTAssertEqual(Set(first.keys), ["debian-13", "debian-13-build"])
        XCTAssertEqual(first, second, "two creates from the same packages differ")
    }

    func testExitStatusAndOutputPassThrough() throws {
        let r = try run(["sandbox", "run", "--stack", "busybox", "--", "sh", "-c", "echo out; echo err >&2; exit 42"])
        XCTAssertEqual(r.status, 42)
        XCTAssertEqual(r.stdout, "out\n")
        XCTAssertEqual(r.stderr, "err\n")
        let help = try run(["sandbox", "run", "--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("USAGE: kbuild sandbox run [<options>] -- [<command> ...]"), help.stdout)
        let flagsAfter = try run(["sandbox", "run", "--stack", "busybox", "--", "echo", "--help", "--memory"])
        XCTAssertEqual(flagsAfter.stdout, "--help --memory\n", "everything after -- is the command's")
        let ok = try run(["sandbox", "run", "--stack", "busybox", "--env", "A=b c", "--workdir", "/etc", "--", "sh", "-c", "echo \"$A\" $(pwd)"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(ok.stdout, "b c /etc\n")
    }

    func testLimitsFromTheCommandLine() throws {
        let oom = try run(["sandbox", "run", "--stack", "busybox", "--memory", "32M", "--", "awk", "BEGIN { s = \"x\"; while (1) s = s s }"])
        XCTAssertEqual(oom.status, 137)
        XCTAssertTrue(oom.stderr.contains("out of memory (the memory limit was reached) (--memory 32M)"), oom.stderr)
        let slow = try run(["sandbox", "run", "--stack", "busybox", "--timeout", "1s", "--", "sleep", "30"])
        XCTAssertEqual(slow.status, 137)
        XCTAssertTrue(slow.stderr.contains("timed out after 1s"), slow.stderr)
    }

    func testBadInputFromTheCommandLine() throws {
        let rows: [([String], Int32?, String)] = [
            (["--memory", "0", "--", "true"], nil, "memory 0 bytes is below the minimum of 4 MiB"),
            (["--memory", "lots", "--", "true"], nil, "invalid --memory \"lots\""),
            (["--timeout=-5s", "--", "true"], nil, "invalid --timeout \"-5s\": must be positive"),
            (["--timeout", "0", "--", "true"], nil, "must be positive"),
            (["--pids", "0", "--", "true"], nil, "pids 0 must be between"),
            (["--network", "kbuild-missing-ns", "--", "true"], nil, "/run/netns/kbuild-missing-ns"),
            (["--mount", "nocolon", "--", "true"], nil, "invalid --mount \"nocolon\""),
            (["--user", "root", "--", "true"], nil, "invalid --user \"root\""),
            (["--", "no-such-command"], 127, "command not found in the sandbox's PATH: no-such-command"),
            ([], nil, "no command given"),
        ]
        for (args, status, message) in rows {
            let r = try run(["sandbox", "run", "--stack", "busybox"] + args)
            if let status { XCTAssertEqual(r.status, status, "\(args)") } else { XCTAssertNotEqual(r.status, 0, "\(args)") }
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        let noStack = try run(["sandbox", "run", "--stack", "nope", "--", "true"])
        XCTAssertNotEqual(noStack.status, 0)
        XCTAssertTrue(noStack.stderr.contains("no stack named \"nope\""), noStack.stderr)
        let badKind = try run(["stack", "create", "alpine"])
        XCTAssertTrue(badKind.stderr.contains("unknown stack kind \"alpine\""), badKind.stderr)
        let badImport = try run(["stack", "import", "/nonexistent/rootfs", "x"])
        XCTAssertTrue(badImport.stderr.contains("/nonexistent/rootfs does not exist"), badImport.stderr)
    }

    func testSigtermStopsTheSandboxAndCleansUp() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: kbuildBinary)
        p.arguments = ["sandbox", "run", "--stack", "busybox", "--", "sh", "-c", "sleep 300 & sleep 300"]
        p.environment = ProcessInfo.processInfo.environment.merging(["KBUILD_DATA_DIR": SandboxCLITests.data]) { $1 }
        p.standardError = FileHandle.nullDevice
        try p.run()
        usleep(700_000)
        let cgroups = { (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/memory/kbuild"))?.filter { $0.hasPrefix("sb-\(p.processIdentifier)-") } ?? [] }
        XCTAssertEqual(cgroups().count, 1, "the sandbox has its cgroup while it runs")
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 137)
        XCTAssertEqual(cgroups(), [])
    }

    func testStackImageWorksWithSkopeoUmociAndRunc() throws {
        let ls = try run(["stack", "ls", "--json"])
        let rows = try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as? [[String: Any]]
        let image = try XCTUnwrap(rows?.first { $0["name"] as? String == "busybox" }?["image"] as? String)
        let work = try tempDir(self, "oci")
        let export = try run(["stack", "export", "busybox", work + "/layout"])
        XCTAssertEqual(export.status, 0, export.stderr)
        // skopeo reads the layout and names the same digest.
        let inspect = try sh("/usr/bin/skopeo", ["inspect", "--raw", "oci:\(work)/layout:busybox"])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        XCTAssertEqual("K-" + (try sha256Hex(Data(inspect.stdout.utf8))), image)
        // umoci verifies every blob's digest as it unpacks; runc runs the result.
        let unpack = try sh("/usr/bin/umoci", ["unpack", "--image", "\(work)/layout:busybox", work + "/bundle"])
        XCTAssertEqual(unpack.status, 0, unpack.stderr)
        let config = work + "/bundle/config.json"
        var json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: config))) as? [String: Any])
        var process = try XCTUnwrap(json["process"] as? [String: Any])
        process["args"] = ["/bin/sh", "-c", "echo hello from runc; cat /etc/os-release | head -1"]
        process["terminal"] = false
        json["process"] = process
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: config))
        let runc = try sh("/usr/sbin/runc", ["run", "--bundle", work + "/bundle", "kbuild-test-\(getpid())"])
        XCTAssertEqual(runc.status, 0, runc.stderr)
        XCTAssertEqual(runc.stdout, "hello from runc\nNAME=kbuild-busybox\n")
        // Reproducible: the root filesystem runc ran, imported again, is the same layer tree.
        let again = try run(["stack", "import", work + "/bundle/rootfs", "busybox-again"])
        XCTAssertEqual(again.status, 0, again.stderr)
        let both = try JSONSerialization.jsonObject(with: Data(try run(["stack", "ls", "--json"]).stdout.utf8)) as? [[String: Any]]
        let layers = (both ?? []).filter { ["busybox", "busybox-again"].contains($0["name"] as? String) }.map { $0["layers"] as? [String] ?? [] }
        XCTAssertEqual(layers.count, 2)
        XCTAssertEqual(layers.first, layers.last)
    }
}

extension SandboxCLITests {
    /// The python example pushed to kbuild on the debian stack, pulled with
    /// skopeo, unpacked with umoci, run with runc: its web process answers HTTP.
    func testPythonExamplePushedPulledAndRunByRunc() throws {
        XCTAssertEqual(try XCTUnwrap(SandboxCLITests.debian).status, 0)
        let routerPort = freePort()
        let server = try startKbuildUp(self, data: SandboxCLITests.data, extra: ["--router-port", String(routerPort)])
        XCTAssertEqual(try run(["apps:create", "python"]).status, 0)
        let work = try tempDir(self, "python-example")
        XCTAssertEqual(try sh("/bin/cp", ["-a", "\(repositoryRoot)/examples/python/.", work]).status, 0)
        try git(["init", "-q"], in: work)
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "The python example"], in: work)
        let remote = try sh(kbuildBinary, ["git:remote", "python", "--data-dir", SandboxCLITests.data], cwd: work)
        XCTAssertEqual(remote.status, 0, remote.stderr)
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        for line in ["remote: -----> Python app detected", "Installing from the wheels in the app's tree (--no-index)",
                     "Successfully installed kbuild-greeting-1.0.0", "remote:        web: python3 app.py",
                     "remote: -----> v1 is live"] {
            XCTAssertTrue(push.stderr.contains(line), "\(line) in:\n\(push.stderr)")
        }
        // Served by kbuild itself at python.localhost, through the router.
        let served = try sh("/usr/bin/curl", ["-sf", "--max-time", "10", "-H", "Host: python.localhost", "http://127.0.0.1:\(routerPort)/"])
        XCTAssertEqual(served.status, 0, served.stderr)
        XCTAssertTrue(served.stdout.contains("hello from python"), served.stdout)

        let dir = try tempDir(self, "python-runc")
        let creds = "kbuild:" + server.token
        let copy = try sh("/usr/bin/skopeo", ["copy", "--src-creds", creds, "--src-tls-verify=false", "docker://\(server.hostPort)/python:latest", "oci:\(dir)/img:latest"])
        XCTAssertEqual(copy.status, 0, copy.stderr)
        let inspect = try sh("/usr/bin/skopeo", ["inspect", "--creds", creds, "--tls-verify=false", "docker://\(server.hostPort)/python:latest"])
        let info = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any])
        let labels = info["Labels"] as? [String: String] ?? [:]
        XCTAssertEqual(labels["org.opencontainers.image.revision"], trimmed(try git(["rev-parse", "HEAD"], in: work).stdout))
        XCTAssertTrue(labels["dev.kbuild.buildpacks"]?.hasPrefix("python@K-") == true, "\(labels)")
        XCTAssertTrue((info["Env"] as? [String] ?? []).contains("VIRTUAL_ENV=/app/.venv"), "\(info)")
        // The image is the run image, the dependency layer (/app/.venv) and the app layer.
        XCTAssertEqual((info["Layers"] as? [Any])?.count, 3, "\(info)")

        let unpack = try sh("/usr/bin/umoci", ["unpack", "--image", "\(dir)/img:latest", dir + "/bundle"])
        XCTAssertEqual(unpack.status, 0, unpack.stderr)
        // The image's own Cmd, Env and WorkingDir, on the host's network (runc's own would have no interface), on a free port.
        let config = dir + "/bundle/config.json"
        var json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: config))) as? [String: Any])
        var process = try XCTUnwrap(json["process"] as? [String: Any])
        // The web command, after /app/.profile.d/*.sh is sourced, as on Heroku.
        XCTAssertEqual((process["args"] as? [String])?.last, "python3 app.py")
        XCTAssertTrue((process["args"] as? [String])?[2].contains("/app/.profile.d/*.sh") == true, "\(process)")
        XCTAssertEqual(process["cwd"] as? String, "/app")
        let port = freePort()
        process["env"] = (process["env"] as? [String] ?? []).filter { !$0.hasPrefix("PORT=") } + ["PORT=\(port)"]
        process["terminal"] = false
        json["process"] = process
        var linux = try XCTUnwrap(json["linux"] as? [String: Any])
        linux["namespaces"] = (linux["namespaces"] as? [[String: Any]] ?? []).filter { $0["type"] as? String != "network" }
        json["linux"] = linux
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: config))
        let id = "kbuild-py-\(getpid())"
        let runc = try spawnServer("/usr/sbin/runc", ["run", "--bundle", dir + "/bundle", id], output: dir + "/runc.log")
        addTeardownBlock {
            _ = try? sh("/usr/sbin/runc", ["kill", id, "KILL"])
            _ = reap(runc)
            _ = try? sh("/usr/sbin/runc", ["delete", "-f", id])
        }
        var body = ""
        for _ in 0..<100 where !body.contains("hello from python") {
            body = (try? sh("/usr/bin/curl", ["-s", "--max-time", "2", "http://127.0.0.1:\(port)/"]).stdout) ?? ""
            if !body.contains("hello from python") { usleep(100_000) }
        }
        XCTAssertTrue(body.contains("hello from python"), body + ((try? String(contentsOfFile: dir + "/runc.log", encoding: .utf8)) ?? ""))
        XCTAssertTrue(body.contains("kbuild_greeting 1.0.0"), body)
    }
}

func sha256Hex(_ data: Data) throws -> String {
    let r = try sh("/usr/bin/sha256sum", ["-"], stdin: data)
    return String(r.stdout.prefix(64))
}
