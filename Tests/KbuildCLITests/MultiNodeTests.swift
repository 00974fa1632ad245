import Foundation
import XCTest

/// Several nodes on one machine, each in a network namespace of its own,
/// reached over a veth pair, as separate hosts would be.
final class MultiNodeTests: XCTestCase {
    func ip(_ args: [String]) throws {
        let r = try sh("/usr/sbin/ip", args)
        XCTAssertEqual(r.status, 0, "ip \(args.joined(separator: " ")): \(r.stderr)")
    }

    func testUpWithThreeNodesSpreadsAndServesFromEach() throws {
        let data = try makeData("nodes3")
        let routerPort = freePort()
        let up = try startKbuildUp(self, data: data, extra: ["--nodes", "3", "--router-port", String(routerPort), "--node-memory", "1G"])
        _ = up
        let work = try makeApp("spread", data: data)
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertEqual(try kbuild(["ps:scale", "spread", "web=3"], dataDir: data).status, 0)
        try waitUntil("3 healthy") { healthy(try ps("spread", data), count: 3) }
        let procs = try ps("spread", data)
        XCTAssertEqual(Set(procs.map(\.node)), ["n1", "n2", "n3"], "one replica per node")
        // Each node filled its own Keg over HTTP, and reached the state through the API as a joined node does, with a join token of its own.
        let tokens = try kbuild(["tokens"], dataDir: data).stdout
        for node in ["n1", "n2", "n3"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(data)/nodes/\(node)/host/keg"), node)
            XCTAssertTrue(tokens.contains("node-\(node)  joins as node \(node)"), tokens)
        }
        // The router reaches every node's process at its own address: all three answer.
        var served = Set<String>()
        try waitUntil("every node serves") {
            let r = routed(routerPort, host: "spread.localhost", path: "/env.txt")
            if r.status == 200, let dyno = r.body.split(separator: "\n").first(where: { $0.hasPrefix("DYNO=") }) { served.insert(String(dyno)) }
            return served.count == 3
        }
        let nodes = try kbuild(["ps", "spread"], dataDir: data).stdout
        XCTAssertTrue(nodes.contains("n2"), nodes)
        // A formation that cannot fit (1 GiB nodes, 3 × 512 MiB fit, 7 do not): refused, and what runs serves on.
        let tooBig = try kbuild(["ps:scale", "spread", "web=7"], dataDir: data)
        XCTAssertNotEqual(tooBig.status, 0)
        XCTAssertTrue(tooBig.stderr.contains("does not fit"), tooBig.stderr)
        XCTAssertEqual(routed(routerPort, host: "spread.localhost").status, 200)

        // On one node, one app's process cannot reach another app's published port at the node's address.
        let other = try makeApp("other", data: data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: other).status, 0)
        try waitUntil("other healthy") { healthy(try ps("other", data), count: 1) }
        let target = try XCTUnwrap(try ps("other", data).first)
        let neighbour = try XCTUnwrap(try ps("spread", data).first { $0.node == target.node })
        let probe = try sh("/usr/bin/nsenter", ["--net=/proc/\(try XCTUnwrap(neighbour.hostPID))/ns/net", "/usr/bin/curl", "-s", "-o", "/dev/null",
                                                "--max-time", "3", "http://\(try XCTUnwrap(target.address)):\(try XCTUnwrap(target.port))/"])
        XCTAssertFalse([0, 52, 56].contains(probe.status), "spread's process on \(target.node) reached other's port: \(probe)")
        XCTAssertEqual(routed(routerPort, host: "other.localhost").status, 200, "the router still does")

        // A drained node's process moves (healthy elsewhere first), and the app serves throughout.
        let drainedNode = try XCTUnwrap(try ps("spread", data).first?.node)
        let drained = try kbuild(["nodes:drain", drainedNode], dataDir: data)
        XCTAssertEqual(drained.status, 0, drained.stderr)
        XCTAssertTrue(try kbuild(["nodes"], dataDir: data).stdout.contains("\(drainedNode)  alive (drained)"))
        try waitUntil("spread's processes off \(drainedNode)", timeout: 60) {
            let now = try ps("spread", data).filter { $0.name.hasPrefix("web.") }
            XCTAssertEqual(routed(routerPort, host: "spread.localhost").status, 200, "a request failed during the drain")
            return now.count == 3 && healthy(now, count: 3) && !now.contains { $0.node == drainedNode }
        }
        XCTAssertEqual(try kbuild(["nodes:undrain", drainedNode], dataDir: data).status, 0)
        XCTAssertFalse(try kbuild(["nodes"], dataDir: data).stdout.contains("(drained)"))
        XCTAssertNotEqual(try kbuild(["nodes:drain", "nosuch"], dataDir: data).status, 0)

        let network = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: data + "/nodes/n1/network.json"))) as? [String: Any]
        let namespace = try XCTUnwrap(network?["namespace"] as? String)
        XCTAssertTrue(try sh("/usr/sbin/ip", ["netns", "list"]).stdout.contains(namespace))
        kill(up.process.processIdentifier, SIGTERM)
        up.process.waitUntilExit()
        let down = try kbuild(["down", "--grace", "2"], dataDir: data)
        XCTAssertTrue(down.stdout.contains("Stopped 4 processes"), down.stdout)
        XCTAssertFalse(try sh("/usr/sbin/ip", ["netns", "list"]).stdout.contains(namespace), "kbuild down removes the nodes' networks")
    }

    func testALostNodesProcessesMoveToTheOthers() throws {
        let data = try makeData("lost")
        let routerPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--nodes", "0", "--router-port", String(routerPort)])
        // Two nodes made by hand: a namespace each, joined to the host by a veth pair.
        let tag = String(UInt16.random(in: 0...0xfff), radix: 16)
        var agents: [pid_t] = []
        for i in 1...2 {
            let ns = "kbt\(tag)n\(i)"
            let (h, p) = ("kbt\(tag)\(i)h", "kbt\(tag)\(i)p")
            let sub = "10.231.\(Int.random(in: 1...250))"
            try ip(["netns", "add", ns])
            addTeardownBlock { _ = try? sh("/usr/sbin/ip", ["link", "del", h]); _ = try? sh("/usr/sbin/ip", ["netns", "del", ns]) }
            try ip(["link", "add", h, "type", "veth", "peer", "name", p, "netns", ns])
            try ip(["addr", "add", "\(sub).1/24", "dev", h])
            try ip(["link", "set", h, "up"])
            try ip(["-n", ns, "addr", "add", "\(sub).2/24", "dev", p])
            try ip(["-n", ns, "link", "set", p, "up"])
            try ip(["-n", ns, "link", "set", "lo", "up"])
            agents.append(try spawnServer(kbuildBinary, ["agent", "--name", "n\(i)", "--network", ns, "--address", "\(sub).2", "--data-dir", data],
                                          output: data + "/agent-n\(i).log"))
        }
        defer { for a in agents { kill(a, SIGCONT); kill(a, SIGKILL); _ = reap(a) } }
        let work = try makeApp("moving", data: data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        XCTAssertEqual(try kbuild(["ps:scale", "moving", "web=2"], dataDir: data).status, 0)
        try waitUntil("one on each node") {
            let p = try ps("moving", data)
            return healthy(p, count: 2) && Set(p.map(\.node)) == ["n1", "n2"]
        }
        // n2 stops heartbeating and its network goes.
        kill(agents[1], SIGSTOP)
        try ip(["link", "del", "kbt\(tag)2h"])
        let lost = Date()
        try waitUntil("both on n1", timeout: 40) {
            let p = try ps("moving", data).filter { $0.node == "n1" }
            return p.count == 2 && p.allSatisfy { $0.state == "healthy" }
        }
        XCTAssertGreaterThan(Date().timeIntervalSince(lost), 5, "not before the lease ran out")
        // The router only sends to the live node.
        for _ in 0..<10 { XCTAssertEqual(routed(routerPort, host: "moving.localhost").status, 200) }
        // The lost node, back, is told to run nothing, and stops what it ran.
        kill(agents[1], SIGCONT)
        try waitUntil("n2 empty") { try ps("moving", data).allSatisfy { $0.node == "n1" } }
    }
}
