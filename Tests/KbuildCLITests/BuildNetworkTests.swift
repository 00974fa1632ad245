import Foundation
import XCTest

/// Builds reach the outside (NAT egress, DNS through the host's resolvers)
/// and nothing of the host's: a buildpack in the pushed tree probes from
/// inside the build, against listeners this test opens on each host address.
final class BuildNetworkTests: XCTestCase {
    /// This data dir's namespaces of builds and one-off runs (slot 17).
    func buildNamespaces(_ data: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []).filter { $0.hasPrefix("kbp-") && $0.contains("-17-") }
    }

    /// A buildpack in the app's tree whose compile runs `probe` (busybox sh) inside the build.
    func probeApp(_ name: String, data: String, probe: String) throws -> String {
        try makeApp(name, data: data, files: [
            ".buildpacks": "./probe\n",
            "probe/bin/detect": "#!/bin/sh\nexit 0\n",
            "probe/bin/compile": "#!/bin/sh\n" + probe,
        ])
    }

    func testABuildReachesTheOutsideButNotTheHost() throws {
        let data = try makeData("buildnet")
        let routerPort = freePort()
        let server = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        let apiPort = try XCTUnwrap(URL(string: server.url)?.port)
        let hostIP = try hostAddress()
        let loopbackOnly = try listen("127.0.0.1")
        let everywhere = try listen("0.0.0.0")
        let everywhere6 = try listen("::")
        // A running app the build must not reach either.
        let victimWork = try makeApp("victim", data: data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: victimWork).status, 0)
        let victim = try XCTUnwrap(try ps("victim", data).first)
        let (victimAddress, victimPort) = (try XCTUnwrap(victim.address), try XCTUnwrap(victim.port))

        let hostReachesPyPI = try sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "https://pypi.org/simple/six/"]).stdout == "200"
        let targets: [(String, String, Int)] = [
            ("LOOPBACK", "127.0.0.1", loopbackOnly), ("API-LOOPBACK", "127.0.0.1", apiPort),
            ("HOST-ANY", hostIP, everywhere), ("API-HOST", hostIP, apiPort), ("ROUTER-HOST", hostIP, routerPort),
            ("GATEWAY-ANY", "$gw", everywhere), ("GATEWAY-API", "$gw", apiPort), ("GATEWAY-ROUTER", "$gw", routerPort),
            ("APP", victimAddress, victimPort), ("LOOPBACK6", "::1", everywhere6),
        ]
        var probe = """
            gw=$(ip route | awk '/^default/ { print $3 }')
            echo "gateway $gw"
            [ -n "$gw" ] || echo NO-GATEWAY

            """
        for (word, host, port) in targets { probe += "nc -w 2 \(host) \(port) </dev/null && echo REACHED-\(word)\n" }
        // The veth gateway's IPv6 link-local address (EUI-64, from its MAC as ARP found it: the host answers no ICMPv6 from a build).
        probe += """
            set -- $(ip neigh show "$gw" | awk '{ print $5 }' | tr ':' ' ')
            [ $# -eq 6 ] && ll=$(printf 'fe80::%x:%x:%x:%x' $(( (0x$1 ^ 2) * 256 + 0x$2 )) $(( 0x$3 * 256 + 255 )) $(( 254 * 256 + 0x$4 )) $(( 0x$5 * 256 + 0x$6 )))
            echo "link-local $ll"

            [ -n "$ll" ] && nc -w 2 "$ll%eth0" \(everywhere6) </dev/null && echo REACHED-GATEWAY6
            nslookup pypi.org >/dev/null 2>&1 && echo RESOLVED
            nc -w 10 pypi.org 443 </dev/null && echo REACHED-OUTSIDE
            echo probed

            """
        let work = try probeApp("probe", data: data, probe: probe)
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stderr.contains("probed"), push.stderr)
        XCTAssertTrue(push.stderr.contains("Network: egress"), push.stderr)
        XCTAssertFalse(push.stderr.contains("NO-GATEWAY"), push.stderr)
        XCTAssertTrue(push.stderr.contains("link-local fe80"), "the gateway's IPv6 address is found, so the probe of it means something: \(push.stderr)")
        for (word, host, port) in targets {
            XCTAssertFalse(push.stderr.contains("REACHED-\(word)\n"), "\(word) (\(host):\(port)) is reachable from a build")
        }
        XCTAssertFalse(push.stderr.contains("REACHED-GATEWAY6"), push.stderr)
        if hostReachesPyPI {
            XCTAssertTrue(push.stderr.contains("RESOLVED"), "DNS from a build: \(push.stderr)")
            XCTAssertTrue(push.stderr.contains("REACHED-OUTSIDE"), "egress from a build: \(push.stderr)")
        } else {
            print("skipped the egress check: this host cannot reach pypi.org itself")
        }
        XCTAssertEqual(buildNamespaces(data), [], "the build's network is removed with it")

        // build-network=none: loopback only, and a build of its own (the network is an input).
        XCTAssertEqual(try kbuild(["apps:set", "probe", "build-network=none"], dataDir: data).status, 0)
        try writeFile(work + "/www/index.html", "again\n")
        try git(["commit", "-q", "-am", "again"], in: work)
        let offline = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(offline.status, 0, offline.stderr)
        XCTAssertTrue(offline.stderr.contains("Network: none"), offline.stderr)
        XCTAssertTrue(offline.stderr.contains("NO-GATEWAY"), offline.stderr)
        XCTAssertFalse(offline.stderr.contains("REACHED-OUTSIDE"), offline.stderr)
        let apps = try kbuild(["apps"], dataDir: data)
        XCTAssertTrue(apps.stdout.contains("probe  stack busybox  build-network none"), apps.stdout)

        // Bad settings: each refused, the app unchanged.
        for (setting, message) in [("build-network=host", "invalid build network \"host\""), ("colour=blue", "unknown setting \"colour\""),
                                   ("build-network", "want KEY=VALUE"), ("stack=nosuch", "no stack named")] {
            let r = try kbuild(["apps:set", "probe", setting], dataDir: data)
            XCTAssertNotEqual(r.status, 0, setting)
            XCTAssertTrue(r.stderr.contains(message), "\(setting): \(r.stderr)")
        }
        let bad = try kbuild(["apps:create", "nonet", "--stack", "busybox", "--build-network", "wifi"], dataDir: data)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("invalid build network \"wifi\": want egress or none"), bad.stderr)
        XCTAssertTrue(try kbuild(["apps:set", "nosuchapp", "build-network=none"], dataDir: data).stderr.contains("no app named"))
        XCTAssertTrue(try kbuild(["apps"], dataDir: data).stdout.contains("probe  stack busybox  build-network none"))
    }

    /// A kill -9 mid-build leaves the build's namespace; the next start removes it.
    func testAKilledBuildsNetworkIsRemoved() throws {
        let data = try makeData("buildkill")
        var up = try startKbuildUp(self, data: data)
        let work = try probeApp("slow", data: data, probe: "echo building; sleep 20; echo slept\n")
        let push = Process()
        push.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        push.arguments = ["push", "kbuild", "main"]
        push.currentDirectoryURL = URL(fileURLWithPath: work)
        push.standardError = FileHandle.nullDevice
        push.standardOutput = FileHandle.nullDevice
        try push.run()
        try waitUntil("the build has a network", timeout: 30) { !buildNamespaces(data).isEmpty }
        kill(up.process.processIdentifier, SIGKILL)
        up.process.waitUntilExit()
        push.terminate()
        push.waitUntilExit()
        // Whatever still builds (the next worker taking the build over) holds a network of its own; the killed one's goes.
        up = try startKbuildUp(self, data: data)
        try waitUntil("no build network is left", timeout: 90) { buildNamespaces(data).isEmpty }
        kill(up.process.processIdentifier, SIGTERM)
        up.process.waitUntilExit()
        XCTAssertEqual(try kbuild(["down", "--grace", "2"], dataDir: data).status, 0)
        XCTAssertEqual(buildNamespaces(data), [])
    }
}

/// Heroku's buildpack contract beyond the three steps: a buildpack from a git
/// URL, `export` files for the buildpacks after, `.profile.d` at process start.
final class BuildpackContractTests: XCTestCase {
    func testExportFilesAndProfileD() throws {
        let data = try makeData("bp-export")
        let routerPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        let work = try makeApp("exports", data: data, files: [
            ".buildpacks": "./first\n./second\nprocfile\n",
            "first/bin/detect": "#!/bin/sh\nexit 0\n",
            "first/bin/compile": "#!/bin/sh\necho 'export GREETING=from-first' > \"$(dirname \"$0\")/../export\"\nmkdir -p /app/.profile.d\necho 'export PROFILED=yes-$KBUILD_APP' > /app/.profile.d/first.sh\n",
            "second/bin/detect": "#!/bin/sh\nexit 0\n",
            "second/bin/compile": "#!/bin/sh\necho \"       second sees GREETING=$GREETING\"\n",
        ])
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stderr.contains("second sees GREETING=from-first"), push.stderr)
        // The web process started after sourcing /app/.profile.d/*.sh (serve.sh writes its environment to env.txt).
        try waitUntil("served") { routed(routerPort, host: "exports.localhost").status == 200 }
        let env = routed(routerPort, host: "exports.localhost", path: "/env.txt")
        XCTAssertTrue(env.body.contains("PROFILED=yes-exports"), env.body)
        let run = try sh(kbuildBinary, ["run", "exports", "--", "sh", "-c", "echo run sees $PROFILED"], env: ["KBUILD_DATA_DIR": data])
        XCTAssertTrue(run.stdout.contains("run sees yes-exports"), run.stdout + run.stderr)
    }

    func testABuildpackFromAGitURLBuildsAnApp() throws {
        let data = try makeData("bp-git")
        let repo = try tempDir(self, "bp-repo")
        try writeFile(repo + "/bin/detect", "#!/bin/sh\necho FromGit\n", mode: 0o755)
        try writeFile(repo + "/bin/compile", "#!/bin/sh\necho '-----> compiled by the buildpack from git'\n", mode: 0o755)
        try writeFile(repo + "/bin/release", "#!/bin/sh\necho '--- {}'\n", mode: 0o755)
        try git(["init", "-q", "-b", "v1"], in: repo)
        try git(["add", "-A"], in: repo)
        try git(["commit", "-q", "-m", "buildpack"], in: repo)
        let added = try kbuild(["buildpack", "add", "file://\(repo)#v1", "--name", "fromgit"], dataDir: data)
        XCTAssertEqual(added.status, 0, added.stderr)
        XCTAssertTrue(added.stdout.hasPrefix("fromgit K-"), added.stdout)
        // Stored: the repository can go, builds use the tree.
        try FileManager.default.removeItem(atPath: repo)
        _ = try startKbuildUp(self, data: data)
        let work = try makeApp("gitbp", data: data, files: [".buildpacks": "fromgit\nprocfile\n"])
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stderr.contains("compiled by the buildpack from git"), push.stderr)
        // Bad URLs: each refused, naming it.
        for (url, message) in [("file:///nonexistent/repo.git", "failed to clone the buildpack file:///nonexistent/repo.git"),
                               ("https://example.invalid/x.git#", "invalid buildpack URL"), ("https://a b", "invalid buildpack URL")] {
            let r = try kbuild(["buildpack", "add", url], dataDir: data)
            XCTAssertNotEqual(r.status, 0, url)
            XCTAssertTrue(r.stderr.contains(message), "\(url): \(r.stderr)")
        }
    }
}
