import Cluster
import Foundation
import NodeAgent
import Trace
import XCTest

/// Small pure decisions beside the planner: the log cap, trace's targets, log lines.
final class SmallDecisionsTests: XCTestCase {
    func testTheLogCapRemovesTheOldestLogsOfStoppedProcessesOnly() {
        let t = Date(timeIntervalSince1970: 1_800_000_000)
        let files: [(app: String, id: String, size: UInt64, modified: Date)] = [
            ("a", "a.web.1-old", 100, t), ("a", "a.web.1-mid", 100, t + 1), ("a", "a.web.1-now", 100, t + 2),
            ("a", "a.web.2-run", 500, t - 10), ("b", "b.web.1-old", 50, t),
        ]
        // a holds 800 bytes against a cap of 600: its running process's log stays even though it is the oldest.
        XCTAssertEqual(LogCap.victims(files, keep: ["a.web.1-now", "a.web.2-run"], capPerApp: 600), ["a.web.1-mid", "a.web.1-old"])
        XCTAssertEqual(LogCap.victims(files, keep: [], capPerApp: 10_000), [])
        XCTAssertEqual(LogCap.victims(files, keep: [], capPerApp: 0).count, 5)
    }

    func testTraceTargets() throws {
        XCTAssertEqual(try TraceTarget(parsing: "4242"), .pid(4242))
        XCTAssertEqual(try TraceTarget(parsing: "shop"), .app("shop"))
        XCTAssertEqual(try TraceTarget(parsing: "shop.web.2"), .process(app: "shop", name: "web.2"))
        XCTAssertEqual(try TraceTarget(parsing: "shop@v7"), .release(app: "shop", version: 7))
        XCTAssertEqual(try TraceTarget(parsing: "shop@v6..v7"), .releaseRange(app: "shop", from: 6, to: 7))
        XCTAssertEqual(try TraceTarget(parsing: "1a2b3c4"), .commit("1a2b3c4"))
        XCTAssertEqual(try TraceTarget(parsing: "Req_42.retry"), .request("Req_42.retry"))
        if case .kid(let p) = try TraceTarget(parsing: "K-0123abcd") { XCTAssertEqual(p.hex, "0123abcd") } else { XCTFail() }
        for bad in ["shop@7", "shop@v0", "shop@v6..", "Not A Thing!", "", "K-12", "BAD@v1"] {
            XCTAssertThrowsError(try TraceTarget(parsing: bad), bad)
        }
    }

    func testLogLinesRoundTrip() throws {
        let t = Date(timeIntervalSince1970: 1_795_000_000.123456)
        let text = LogLine.format(t, tag: "e", "hello: world")
        XCTAssertEqual(text, "2026-11-18T11:06:40.123456Z e hello: world")
        let parsed = try XCTUnwrap(LogLine.parse(Substring(text)))
        XCTAssertEqual(parsed.tag, UInt8(ascii: "e"))
        XCTAssertEqual(parsed.text, "hello: world")
        XCTAssertEqual(parsed.time.timeIntervalSince1970, t.timeIntervalSince1970, accuracy: 0.000002)
        XCTAssertEqual(LogLine.parse("2026-11-18T11:06:40.123456Z o")?.text, "")
        for bad in ["", "not a line", "2026-11-18 06:13:20.123456Z o x", "2026-11-18T06:13:20Z o x"] {
            XCTAssertNil(LogLine.parse(Substring(bad)), bad)
        }
    }
}
