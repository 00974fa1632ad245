import Foundation
import XCTest

/// Helpers for tests of running apps: data dirs with the busybox stack, apps, `kbuild ps`, requests.
struct Proc: Decodable {
    var name: String
    var state: String
    var release: Int64?
    var hostPID: Int32?
    var port: Int?
    /// Its own address (a network namespace of its own), else its node's.
    var address: String?
    var restarts: Int
    var node: String
}

/// A network namespace joined to the host by a veth pair, as a machine of its own on a LAN would be.
struct NetworkNode {
    let name: String
    let namespace: String
    let hostInterface: String
    let hostAddress: String
    let address: String
    let data: String
}

extension XCTestCase {
    /// Makes node `name` in namespace `tag-name` with the /24 `subnet` (the host is .1, the node .2) and a default
    /// route through the host, and a data dir for it; a killed run's leftovers go first, and everything at
    /// teardown (`kbuild down` on its data dir first).
    func makeNetworkNode(_ index: Int, tag: String, subnet: String) throws -> NetworkNode {
        let node = NetworkNode(name: "n\(index)", namespace: "\(tag)-n\(index)", hostInterface: "\(tag.filter { $0 != "-" })n\(index)h",
                               hostAddress: subnet + ".1", address: subnet + ".2", data: try tempDir(self, "\(tag)-n\(index)"))
        let peer = node.hostInterface.dropLast() + "p"
        func ip(_ args: [String]) throws {
            let r = try sh("/usr/sbin/ip", args)
            XCTAssertEqual(r.status, 0, "ip \(args.joined(separator: " ")): \(r.stderr)")
        }
        _ = try? sh("/usr/sbin/ip", ["netns", "del", node.namespace])
        _ = try? sh("/usr/sbin/ip", ["link", "del", node.hostInterface])
        try ip(["netns", "add", node.namespace])
        try ip(["link", "add", node.hostInterface, "type", "veth", "peer", "name", String(peer), "netns", node.namespace])
        try ip(["addr", "add", "\(node.hostAddress)/24", "dev", node.hostInterface])
        try ip(["link", "set", node.hostInterface, "up"])
        try ip(["-n", node.namespace, "addr", "add", "\(node.address)/24", "dev", String(peer)])
        try ip(["-n", node.namespace, "link", "set", String(peer), "up"])
        try ip(["-n", node.namespace, "link", "set", "lo", "up"])
        try ip(["-n", node.namespace, "route", "add", "default", "via", node.hostAddress])
        addTeardownBlock {
            _ = try? sh(kbuildBinary, ["down", "--grace", "2", "--data-dir", node.data])
            _ = try? sh("/usr/sbin/ip", ["netns", "del", node.namespace])
            _ = try? sh("/usr/sbin/ip", ["link", "del", node.hostInterface])
        }
        return node
    }

    /// The host's first global IPv4 address (eth0 here).
    func hostAddress() throws -> String {
        let r = try sh("/usr/sbin/ip", ["-4", "-o", "addr", "show", "scope", "global"])
        let fields = r.stdout.split(separator: "\n").first?.split(separator: " ") ?? []
        let cidr = try XCTUnwrap(fields.firstIndex(of: "inet").map { fields[$0 + 1] }, r.stdout)
        return String(cidr.split(separator: "/")[0])
    }

    /// A TCP listener on the host on `host` (python's http.server; "::" for IPv6), killed at teardown.
    func listen(_ host: String) throws -> Int {
        let port = freePort()
        let pid = try spawnServer("/usr/bin/python3", ["-m", "http.server", String(port), "--bind", host])
        addTeardownBlock { kill(pid, SIGKILL); _ = reap(pid) }
        try waitUntil("listening on \(host):\(port)", timeout: 10) {
            let target = host == "0.0.0.0" ? "127.0.0.1" : host == "::" ? "[::1]" : host
            return (try? sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "--max-time", "1", "http://\(target):\(port)/"]))?.status == 0
        }
        return port
    }

    /// A fresh data dir with the busybox stack.
    func makeData(_ name: String) throws -> String {
        let dir = try tempDir(self, name)
        let r = try kbuild(["stack", "create", "busybox"], dataDir: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        return dir
    }

    /// An app serving www/ with busybox httpd; at start it writes its environment to www/env.txt.
    func makeApp(_ name: String, data: String, serve: String? = nil, files: [String: String] = [:]) throws -> String {
        XCTAssertEqual(try kbuild(["apps:create", name, "--stack", "busybox"], dataDir: data).status, 0)
        let work = try tempDir(self, name + "-src")
        try writeFile(work + "/Procfile", "web: ./serve.sh\n")
        try writeFile(work + "/serve.sh", serve ?? """
            #!/bin/sh
            env | sort > www/env.txt
            echo "serving on $PORT"
            exec busybox httpd -f -p "0.0.0.0:$PORT" -h www
            """, mode: 0o755)
        try writeFile(work + "/www/index.html", "hello from \(name) \(UUID().uuidString)\n")
        for (path, text) in files { try writeFile(work + "/" + path, text, mode: path.hasSuffix(".sh") || path.contains("bin/") ? 0o755 : 0o644) }
        try git(["init", "-q"], in: work)
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "First"], in: work)
        XCTAssertEqual(try sh(kbuildBinary, ["git:remote", name, "--data-dir", data], cwd: work).status, 0)
        return work
    }

    func ps(_ app: String, _ data: String) throws -> [Proc] {
        let r = try kbuild(["ps", app, "--json"], dataDir: data)
        XCTAssertEqual(r.status, 0, r.stderr)
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return (try? decoder.decode([Proc].self, from: Data(r.stdout.utf8))) ?? []
    }

    /// Polls (bounded) until `condition` holds.
    func waitUntil(_ what: String, timeout: TimeInterval = 30, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            usleep(200_000)
        }
        XCTFail("timed out after \(Int(timeout)) s waiting for: \(what)")
        throw CocoaError(.userCancelled)
    }

    /// A request straight to a process (not through the router), at its address and port.
    func get(_ process: Proc, _ path: String = "/") -> String? {
        guard let port = process.port else { return nil }
        return (try? sh("/usr/bin/curl", ["-sf", "--max-time", "5", "http://\(process.address ?? "127.0.0.1"):\(port)\(path)"]))
            .flatMap { $0.status == 0 ? $0.stdout : nil }
    }

    /// The host's processes that run `busybox httpd` for `app` (from their environment), with their KBUILD_RELEASE.
    func appProcesses(_ app: String) -> [(pid: Int32, release: String)] {
        var out: [(Int32, String)] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(name),
                  let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), cmd.starts(with: Array("busybox\0httpd".utf8)),
                  let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            let vars = env.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard vars.contains("KBUILD_APP=\(app)") else { continue }
            out.append((pid, vars.first { $0.hasPrefix("KBUILD_RELEASE=") }.map { String($0.dropFirst(15)) } ?? ""))
        }
        return out
    }

    /// A request through the router with a given Host header.
    func routed(_ port: Int, host: String, path: String = "/", headers extra: [String] = []) -> (status: Int, body: String, headers: [String: String]) {
        guard let r = try? sh("/usr/bin/curl", ["-s", "--max-time", "5", "-D", "-", "-H", "Host: \(host)"] + extra.flatMap { ["-H", $0] }
                                                + ["http://127.0.0.1:\(port)\(path)"]),
              let head = r.stdout.range(of: "\r\n\r\n") else { return (0, "", [:]) }
        let lines = r.stdout[..<head.lowerBound].split(separator: "\r\n")
        let status = lines.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            if let colon = line.firstIndex(of: ":") {
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return (status, String(r.stdout[head.upperBound...]), headers)
    }

    func healthy(_ procs: [Proc], count: Int, release: Int64? = nil) -> Bool {
        procs.count == count && procs.allSatisfy { $0.state == "healthy" && (release == nil || $0.release == release) }
    }

}
