import Foundation
import XCTest

/// `kbuild trace`, end to end: from a real push to the PID of the process that runs it.
final class TraceTests: XCTestCase {
    func testFromAPIDBackToThePushedCommitAndDown() throws {
        let data = try makeData("trace")
        let routerPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        let marker = UUID().uuidString
        let work = try makeApp("traced", data: data, files: ["www/marker.txt": "\(marker)\nsecond line\n"])
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        let sha = trimmed(try git(["rev-parse", "HEAD"], in: work).stdout)
        let proc = try XCTUnwrap(try ps("traced", data).first)

        // The command itself (busybox httpd, a child of the sandbox's PID 1), found as pgrep finds it.
        let pids = appProcesses("traced").map(\.pid)
        XCTAssertEqual(pids.count, 1)
        let pid = try XCTUnwrap(pids.first)
        let up = try kbuild(["trace", String(pid)], dataDir: data)
        XCTAssertEqual(up.status, 0, up.stderr)
        for text in ["traced.web.1", "host PID \(try XCTUnwrap(proc.hostPID))", "traced v1", "commit   \(sha) by Grace Hopper <grace@example.com>",
                     "First", "build    K-", "buildpacks procfile@", "image    K-"] {
            XCTAssertTrue(up.stdout.contains(text), "\(text) in:\n\(up.stdout)")
        }
        // --json for tools; the same chain by process name and by the process KID.
        let json = try kbuild(["trace", String(pid), "--json"], dataDir: data)
        let chain = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let upChain = try XCTUnwrap(chain["up"] as? [String: Any])
        XCTAssertEqual((upChain["source"] as? [String: Any])?["commit"] as? String, sha)
        let processKID = try XCTUnwrap((upChain["process"] as? [String: Any])?["kid"] as? String)
        XCTAssertTrue(try kbuild(["trace", String(processKID.prefix(12))], dataDir: data).stdout.contains(sha))
        XCTAssertTrue(try kbuild(["trace", "traced.web.1"], dataDir: data).stdout.contains(sha))

        // --file: the pushed bytes, exactly.
        let file = try kbuild(["trace", String(pid), "--file", "www/marker.txt"], dataDir: data)
        XCTAssertEqual(file.stdout, "\(marker)\nsecond line\n")

        // ps --all: every process with host PID, process KID, release and short commit.
        let all = try kbuild(["ps", "--all"], dataDir: data).stdout
        let hostPID = try XCTUnwrap(proc.hostPID)
        for text in ["traced.web.1", "host PID \(hostPID)", String(sha.prefix(7)), String(processKID.prefix(10)), " v1 "] {
            XCTAssertTrue(all.contains(text), "\(text) in \(all)")
        }

        // A request id, from the response header, traces to the process that answered it.
        let answered = routed(routerPort, host: "traced.localhost", path: "/marker.txt")
        XCTAssertEqual(answered.status, 200)
        let requestID = try XCTUnwrap(answered.headers["x-request-id"])
        _ = try sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "-H", "Host: traced.localhost", "-H", "X-Request-Id: order-4711-retry", "http://127.0.0.1:\(routerPort)/"])
        for id in [requestID, "order-4711-retry"] {
            try waitUntil("request \(id) logged", timeout: 5) {
                let r = try kbuild(["trace", id], dataDir: data)
                return r.status == 0 && r.stdout.contains("traced.web.1") && r.stdout.contains(sha)
            }
        }
        // A client that reuses another request's id shadows nothing: the router's own id stays unique.
        let reused = routed(routerPort, host: "traced.localhost", path: "/", headers: ["X-Request-Id: order-4711-retry"])
        XCTAssertEqual(reused.headers["x-request-id"], "order-4711-retry", "the client's id is kept")
        let own = try XCTUnwrap(reused.headers["kbuild-request-id"], "\(reused.headers)")
        XCTAssertNotEqual(own, "order-4711-retry")
        try waitUntil("both logged", timeout: 5) {
            let r = try kbuild(["trace", "order-4711-retry"], dataDir: data)
            return r.status != 0 && r.stderr.contains("2 requests were sent with X-Request-Id order-4711-retry") && r.stderr.contains(own)
        }
        let byOwn = try kbuild(["trace", own], dataDir: data)
        XCTAssertEqual(byOwn.status, 0, byOwn.stderr)
        XCTAssertTrue(byOwn.stdout.contains("traced.web.1"), byOwn.stdout)
        XCTAssertTrue(try kbuild(["trace", "no-such-request-id"], dataDir: data).stderr.contains("no app named no-such-request-id, nor a request with that id"))
        XCTAssertTrue(try kbuild(["trace", "Req_0000.unknown"], dataDir: data).stderr.contains("no request Req_0000.unknown in the router's log"))

        // Down from the commit: the release that used it and the process running it now.
        let down = try kbuild(["trace", String(sha.prefix(10))], dataDir: data)
        XCTAssertTrue(down.stdout.contains("traced v1"), down.stdout)
        XCTAssertTrue(down.stdout.contains("traced.web.1"), down.stdout)

        // A second release: what changed, config keys without values.
        try writeFile(work + "/www/marker.txt", "changed\n")
        try git(["commit", "-q", "-am", "Change the marker"], in: work)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        XCTAssertEqual(try kbuild(["config:set", "traced", "SECRET_TOKEN=hunter2"], dataDir: data).status, 0)
        let diff = try kbuild(["trace", "traced@v1..v3"], dataDir: data)
        XCTAssertEqual(diff.status, 0, diff.stderr)
        for text in ["M www/marker.txt", "-\(marker)", "+changed", "+SECRET_TOKEN", "(values hidden)"] {
            XCTAssertTrue(diff.stdout.contains(text), "\(text) in:\n\(diff.stdout)")
        }
        XCTAssertFalse(diff.stdout.contains("hunter2"))

        // Complete by construction: every process running now traces up to a commit, from its host PID.
        let head = trimmed(try git(["rev-parse", "HEAD"], in: work).stdout)
        XCTAssertEqual(try kbuild(["ps:scale", "traced", "web=2"], dataDir: data).status, 0)
        try waitUntil("2 healthy") { healthy(try ps("traced", data), count: 2) }
        let everything = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try kbuild(["ps", "--all", "--json"], dataDir: data).stdout.utf8)) as? [[String: String]])
        XCTAssertGreaterThanOrEqual(everything.count, 2)
        for p in everything {
            let chain = try kbuild(["trace", try XCTUnwrap(p["hostPID"]), "--json"], dataDir: data)
            let up = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(chain.stdout.utf8)) as? [String: Any])?["up"] as? [String: Any])
            for link in ["process", "release", "build", "source"] { XCTAssertNotNil(up[link], "\(link) of \(p)") }
            let commit = (up["source"] as? [String: Any])?["commit"] as? String ?? ""
            XCTAssertTrue([sha, head].contains(commit), "\(commit) is a pushed commit")
            XCTAssertEqual(p["commit"], commit)
        }

        // Bad input: a clear message naming what was not found.
        for (target, message) in [
            ("999999", "PID 999999 is no process any live node reports, nor one on the control plane's machine"),
            ("1", "is not a kbuild process"),
            ("traced@v99", "no release v99 of traced"),
            ("traced@7", "want vN"),
            ("nosuchapp", "no app named nosuchapp, nor a request with that id"),
            ("traced.web.9", "no process traced.web.9 runs now"),
            ("K-00000000", "nothing kbuild ran or released is K-00000000"),
            ("deadbeef00", "no pushed commit deadbeef00"),
            ("Not A Thing!", "cannot trace"),
        ] {
            let r = try kbuild(["trace", target], dataDir: data)
            XCTAssertNotEqual(r.status, 0, target)
            XCTAssertTrue(r.stderr.contains(message), "\(target): \(r.stderr)")
        }
        let missing = try kbuild(["trace", "traced", "--file", "no/such.txt"], dataDir: data)
        XCTAssertTrue(missing.stderr.contains("no file no/such.txt in commit"), missing.stderr)
    }
}
