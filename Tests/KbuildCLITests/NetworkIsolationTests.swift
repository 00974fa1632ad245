import Foundation
import XCTest

/// Every app process and one-off run has a network of its own: the outside
/// through NAT, DNS through the host's resolvers, and nothing of the host's,
/// kbuild's or another app's.
final class NetworkIsolationTests: XCTestCase {
    /// Whether a TCP connection from inside `pid`'s network namespace to host:port succeeds (host curl, the process's network).
    func reaches(from pid: Int32, _ host: String, _ port: Int) throws -> Bool {
        let target = host.contains(":") ? "[\(host)]" : host
        let r = try sh("/usr/bin/nsenter", ["--net=/proc/\(pid)/ns/net", "/usr/bin/curl", "-s", "-o", "/dev/null", "--max-time", "3",
                                            "http://\(target):\(port)/"])
        // 0: answered; 52 (empty reply), 56 (reset) also mean the connection was made.
        return [0, 52, 56].contains(r.status)
    }

    func testAnAppReachesTheOutsideButNotTheHostOrAnotherApp() throws {
        let data = try makeData("netiso")
        let routerPort = freePort()
        let server = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        let hostIP = try hostAddress()
        let loopbackOnly = try listen("127.0.0.1")
        let everywhere = try listen("0.0.0.0")
        for app in ["probe", "victim"] {
            let work = try makeApp(app, data: data)
            let push = try git(["push", "kbuild", "main"], in: work)
            XCTAssertEqual(push.status, 0, push.stderr)
        }
        let probe = try XCTUnwrap(try ps("probe", data).first)
        let victim = try XCTUnwrap(try ps("victim", data).first)
        let (pid, victimAddress, victimPort) = (try XCTUnwrap(probe.hostPID), try XCTUnwrap(victim.address), try XCTUnwrap(victim.port))
        XCTAssertNotEqual(probe.address, victim.address, "a network each")
        // The router and the host reach them at their own addresses.
        try waitUntil("routed") { routed(routerPort, host: "victim.localhost").status == 200 }
        XCTAssertNotNil(get(victim))

        // From inside the probe app's process: nothing of the host's.
        let apiPort = try XCTUnwrap(URL(string: server.url)?.port)
        let gateway = try XCTUnwrap(probe.address.map { a -> String in
            var parts = a.split(separator: ".").map { Int($0)! }
            parts[3] -= 1
            return parts.map(String.init).joined(separator: ".")
        })
        for (host, port, what) in [
            ("127.0.0.1", loopbackOnly, "a loopback-only host service"), ("127.0.0.1", apiPort, "kbuild's API on loopback"),
            (hostIP, everywhere, "a host service bound to 0.0.0.0, at the host's address"), (hostIP, apiPort, "kbuild's API port at the host's address"),
            (gateway, everywhere, "the host through the veth gateway"), (gateway, routerPort, "the router through the gateway"),
            (hostIP, routerPort, "the router at the host's address"),
            (victimAddress, victimPort, "another app's process, bypassing the router"),
        ] {
            XCTAssertFalse(try reaches(from: pid, host, port), "\(what) (\(host):\(port)) is reachable from an app")
        }
        // IPv6: the host's link-local address on the probe's link, and loopback (the namespace's own) lead nowhere.
        let links = try sh("/usr/sbin/ip", ["-6", "-o", "addr", "show", "scope", "link"]).stdout
        if let line = links.split(separator: "\n").first(where: { $0.contains(" kp") }),
           let inet = line.split(separator: " ").firstIndex(of: "inet6") {
            let fields = line.split(separator: " ")
            let address = String(fields[inet + 1].split(separator: "/")[0])
            let r = try sh("/usr/bin/nsenter", ["--net=/proc/\(pid)/ns/net", "/usr/bin/curl", "-s", "-o", "/dev/null", "--max-time", "3",
                                                "--interface", "eth0", "http://[\(address)%eth0]:\(everywhere)/"])
            XCTAssertFalse([0, 52, 56].contains(r.status), "the host's link-local address is reachable: \(r)")
        }

        // The outside, by NAT, and DNS through the host's resolvers (gated on the host itself reaching PyPI).
        let hostReaches = try sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "https://pypi.org/simple/six/"])
        if hostReaches.stdout == "200" {
            let out = try sh("/usr/bin/nsenter", ["--net=/proc/\(pid)/ns/net", "/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                                  "--max-time", "15", "https://pypi.org/simple/six/"])
            XCTAssertEqual(out.stdout, "200", "egress to PyPI from an app's network: \(out.stderr)")
            // Inside the app's own root: busybox's nslookup reads the resolv.conf kbuild mounted in.
            let run = try sh(kbuildBinary, ["run", "probe", "--", "sh", "-c", "cat /etc/resolv.conf; nslookup pypi.org"], env: ["KBUILD_DATA_DIR": data])
            XCTAssertEqual(run.status, 0, run.stdout + run.stderr)
            XCTAssertTrue(run.stdout.contains("pypi.org"), run.stdout)
        } else {
            print("skipped the egress check: this host cannot reach pypi.org itself (\(hostReaches.stdout))")
        }
        // One-off runs are isolated the same way: the API's port on loopback and at the host's address.
        let oneOff = try sh(kbuildBinary, ["run", "probe", "--", "sh", "-c",
                                           "nc -w 2 127.0.0.1 \(apiPort) </dev/null && echo API-LOOPBACK; nc -w 2 \(hostIP) \(apiPort) </dev/null && echo API-HOST; nc -w 2 \(victimAddress) \(victimPort) </dev/null && echo VICTIM; echo done"],
                            env: ["KBUILD_DATA_DIR": data])
        XCTAssertTrue(oneOff.stdout.contains("done"), oneOff.stdout + oneOff.stderr)
        for leak in ["API-LOOPBACK", "API-HOST", "VICTIM"] { XCTAssertFalse(oneOff.stdout.contains(leak), "\(leak): \(oneOff.stdout)") }
    }

    /// A kill -9 of kbuild up leaves the namespaces of processes that keep
    /// running; `kbuild down` removes every one, the firewall and forwarding.
    func testNetworksAreSweptAfterAKill() throws {
        // Only this test's namespaces count: another kbuild on this machine has its own.
        let before = Set((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [])
        let data = try makeData("netsweep")
        let up = try startKbuildUp(self, data: data)
        let work = try makeApp("swept", data: data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        let namespaces = { (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns"))?.filter { $0.hasPrefix("kbp-") && !before.contains($0) } ?? [] }
        XCTAssertEqual(namespaces().count, 1, "\(namespaces())")
        // A namespace left by an agent that died before it wrote its process down.
        let mine = try XCTUnwrap(namespaces().first)
        let tag = mine.split(separator: "-")[1]  // kbp-<tag>-<slot>-<index>: this data dir's
        let stray = mine.replacingOccurrences(of: "-0-", with: "-0-2") // another index of the same slot
        XCTAssertEqual(try sh("/usr/sbin/ip", ["netns", "add", stray]).status, 0)
        kill(up.process.processIdentifier, SIGKILL)
        up.process.waitUntilExit()
        // The process lives on; a new kbuild up adopts it and sweeps the stray one.
        let again = try startKbuildUp(self, data: data)
        try waitUntil("the stray namespace is swept", timeout: 20) { !namespaces().contains(stray) }
        XCTAssertEqual(namespaces().count, 1, "the running process keeps its own")
        XCTAssertTrue(try sh("/usr/sbin/nft", ["list", "tables"]).stdout.contains("kbuild_\(tag)"))
        kill(again.process.processIdentifier, SIGTERM)
        again.process.waitUntilExit()
        let down = try kbuild(["down", "--grace", "2"], dataDir: data)
        XCTAssertEqual(down.status, 0, down.stderr)
        XCTAssertEqual(namespaces(), [])
        XCTAssertFalse(try sh("/usr/sbin/nft", ["list", "tables"]).stdout.contains("kbuild_\(tag)"))
    }
}
