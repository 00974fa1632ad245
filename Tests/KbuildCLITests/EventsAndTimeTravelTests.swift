import Foundation
import XCTest

/// The API under the dashboard, with curl against a real `kbuild up`: the
/// event stream's replay from `Last-Event-ID` and `?after=`, an app token's
/// stream and past limited to its app as it is now (an app destroyed and its
/// name taken again is another tenant's history), `?at=N` with its bad
/// inputs, the paged lists, and config keys without values.
final class EventsAndTimeTravelTests: XCTestCase {
    func curl(_ server: KbuildServer, _ path: String, token: String? = nil, headers: [String] = [], maxTime: String = "20") throws -> (code: Int, body: String) {
        var args = ["-s", "-w", "\n%{http_code}", "--max-time", maxTime, "-H", "Authorization: Bearer \(token ?? server.token)"]
        for h in headers { args += ["-H", h] }
        let out = try sh("/usr/bin/curl", args + [server.url + path]).stdout
        let code = Int(out.split(separator: "\n").last ?? "") ?? -1
        return (code, String(out.dropLast(String(code).count + 1)))
    }

    /// The ids of the `change` events of a stream read for two seconds.
    func eventIDs(_ body: String) -> [Int] {
        body.components(separatedBy: "\n\n").compactMap { block -> Int? in
            guard block.contains("event: change") else { return nil }
            return block.split(separator: "\n").first { $0.hasPrefix("id: ") }.flatMap { Int($0.dropFirst(4)) }
        }
    }

    func revision(_ server: KbuildServer) throws -> Int {
        let body = try curl(server, "/api/v1/revision").body
        let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        return try XCTUnwrap(json?["value"] as? Int, body)
    }

    func testEventsReplayAndTheyAndThePastStayWithTheAppAsItIsNow() throws {
        let data = try makeData("events")
        let server = try startKbuildUp(self, data: data)
        func kb(_ args: [String]) throws {
            let r = try kbuild(args, dataDir: data)
            XCTAssertEqual(r.status, 0, "\(args): \(r.stderr)")
        }
        // The first tenant's app "reused": pushed (v1), a secret in its config (v2); then destroyed.
        let first = try makeApp("reused", data: data)
        XCTAssertEqual(try git(["push", "-q", "kbuild", "main"], in: first).status, 0)
        try kb(["config:set", "reused", "OLD_SECRET=first-tenant"])
        let oldTimes = try revision(server)
        try kb(["apps:destroy", "reused", "--confirm", "reused"])
        // The name taken again by another tenant, with a token of its own: its own v1 and v2.
        let second = try makeApp("reused", data: data)
        let pushed = try git(["push", "-q", "kbuild", "main"], in: second)
        XCTAssertEqual(pushed.status, 0, pushed.stderr)
        let commit = trimmed(try git(["rev-parse", "HEAD"], in: second).stdout)
        let made = try kbuild(["tokens:create", "second", "--app", "reused"], dataDir: data)
        XCTAssertEqual(made.status, 0, made.stderr)
        let token = trimmed(made.stdout)
        try kb(["config:set", "reused", "NEW=1"])

        // Its releases are its own, numbered from v1 (the ref's own count runs on past the first app's).
        let v1 = try curl(server, "/api/v1/apps/reused/releases/1", token: token)
        XCTAssertEqual(v1.code, 200, v1.body)
        XCTAssertTrue(v1.body.contains(commit), "v1 is the second tenant's push: \(v1.body)")
        XCTAssertEqual(try curl(server, "/api/v1/apps/reused/releases/3", token: token).code, 404)
        let list = try curl(server, "/api/v1/apps/reused/releases", token: token).body
        XCTAssertEqual(list.components(separatedBy: "\"version\":").count - 1, 2, list)
        XCTAssertFalse(list.contains("OLD_SECRET"), list)
        let totals = try sh("/usr/bin/curl", ["-s", "-D", "-", "-o", "/dev/null", "-H", "Authorization: Bearer \(token)",
                                              server.url + "/api/v1/apps/reused/releases?page=1&per=1"]).stdout
        XCTAssertTrue(totals.lowercased().contains("kbuild-total: 2"), totals)
        let rolled = try kbuild(["releases:rollback", "reused", "v1"], dataDir: data)
        XCTAssertEqual(rolled.status, 0, rolled.stderr)
        // Its builds as of the first app's time: none of the first app's.
        let builds = try curl(server, "/api/v1/builds?at=\(oldTimes)", token: token)
        XCTAssertEqual(builds.code, 200, builds.body)
        XCTAssertTrue(builds.body.contains("\"total\":0"), "the first app's builds are not the token's: \(builds.body)")
        // A change asked of the API from another site's page is refused (cached basic credentials would ride along).
        let crossSite = try sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-u", "x:\(server.token)",
                                                 "-H", "Sec-Fetch-Site: cross-site", "-d", "{}", server.url + "/api/v1/apps/reused/ps/restart"]).stdout
        XCTAssertEqual(crossSite, "403")

        // Its token: no past before the app was made; its stream from 0 carries nothing of the first app.
        let past = try curl(server, "/api/v1/apps/reused?at=\(oldTimes)", token: token)
        XCTAssertEqual(past.code, 404, past.body)
        XCTAssertTrue(past.body.contains("made later"), past.body)
        let listed = try curl(server, "/api/v1/apps?at=\(oldTimes)", token: token)
        XCTAssertEqual(listed.code, 200, listed.body)
        XCTAssertFalse(listed.body.contains("reused"), "the earlier app of that name is not the token's: \(listed.body)")
        let stream = try curl(server, "/api/v1/events?after=0", token: token, maxTime: "2")
        let theirs = eventIDs(stream.body)
        XCTAssertFalse(theirs.isEmpty, stream.body)
        XCTAssertTrue(theirs.allSatisfy { $0 > oldTimes }, "no event of the first app reaches the second tenant: \(theirs) vs \(oldTimes)")
        XCTAssertFalse(stream.body.contains("OLD_SECRET"))
        // The admin still reads the whole past.
        XCTAssertEqual(try curl(server, "/api/v1/apps/reused?at=\(oldTimes)").code, 200)

        // Replay: Last-Event-ID wins over ?after, and the stream goes on from exactly there, in order, once each.
        try kb(["config:set", "reused", "A=1"])
        try kb(["config:set", "reused", "B=2"])
        let now = try revision(server)
        let all = eventIDs(try curl(server, "/api/v1/events?after=0", maxTime: "2").body)
        // (The node's heartbeats go on meanwhile: each is a change too, after `now`.)
        XCTAssertEqual(Array(all.prefix(now)), Array(1...now), "every revision once, in order (the admin hears every change)")
        XCTAssertEqual(all, Array(1...(all.last ?? 0)), "and on, with no gap")
        let resumed = eventIDs(try curl(server, "/api/v1/events?after=1", headers: ["Last-Event-ID: \(now - 3)"], maxTime: "2").body)
        XCTAssertEqual(Array(resumed.prefix(3)), [now - 2, now - 1, now])
        XCTAssertEqual(resumed, Array((now - 2)...(resumed.last ?? 0)))
        // Live: a stream open before a change hears it.
        let waiting = Process()
        waiting.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        waiting.arguments = ["-s", "-N", "--max-time", "4", "-H", "Authorization: Bearer \(server.token)", server.url + "/api/v1/events"]
        let out = Pipe()
        waiting.standardOutput = out
        try waiting.run()
        usleep(800_000)
        try kb(["config:set", "reused", "LIVE=1"])
        waiting.waitUntilExit()
        let live = eventIDs(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        XCTAssertTrue(live.contains { $0 > now }, "the live change reached the open stream: \(live)")

        // Bad revisions and event ids: said, nothing else.
        for (path, code, says) in [("/api/v1/apps?at=0", 400, "a number from 1"), ("/api/v1/apps?at=abc", 400, "invalid revision"),
                                   ("/api/v1/apps?at=99999999", 404, "out of range"), ("/api/v1/events?after=-1", 400, "invalid event id"),
                                   ("/api/v1/events?after=99999999", 400, "invalid event id"), ("/api/v1/builds?page=0", 400, "invalid page")] {
            let answer = try curl(server, path)
            XCTAssertEqual(answer.code, code, "\(path): \(answer.body)")
            XCTAssertTrue(answer.body.contains(says), "\(path): \(answer.body)")
        }
        let forged = try curl(server, "/", headers: ["Cookie: kbuild_session=AAAA"], maxTime: "5")
        XCTAssertEqual(forged.code, 200, "a bearer token is used when the cookie is no session: \(forged.body.prefix(200))")

        // Config keys without their values; paged lists say how many there are.
        let keys = try curl(server, "/api/v1/apps/reused/config?keys=1", token: token)
        // (The rollback to v1 took NEW away; A was set after it.)
        XCTAssertTrue(keys.body.contains("\"A\":\"\"") && !keys.body.contains("\"A\":\"1\""), keys.body)
        for i in 0..<5 { try kb(["apps:create", "many\(i)", "--stack", "busybox"]) }
        let head = try sh("/usr/bin/curl", ["-s", "-D", "-", "-o", "/dev/null", "-H", "Authorization: Bearer \(server.token)",
                                            server.url + "/api/v1/apps?page=2&per=2"]).stdout
        XCTAssertTrue(head.lowercased().contains("kbuild-total: 6"), head)
        let page2 = try curl(server, "/api/v1/apps?page=2&per=2").body
        // Sorted by name: many0 many1 | many2 many3 | many4 reused.
        XCTAssertTrue(page2.contains("\"many2\"") && page2.contains("\"many3\"") && !page2.contains("\"many1\""), page2)
    }
}
