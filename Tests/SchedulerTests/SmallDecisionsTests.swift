import Cluster
import Foundation
import NodeAgent
import Trace
import XCTest

/// Small pure decisions beside the planner: the log cap, trace's targets, log lines.
final class SmallDecisionsTests: XCTestCase {
    func testTheLogCapDropsTheOldestOutputFirst() {
        let t = Date(timeIntervalSince1970: 1_800_000_000)
        let files = [
            LogCap.File(app: "a", id: "a.web.1-old", size: 100, modified: t), LogCap.File(app: "a", id: "a.web.1-mid", size: 100, modified: t + 1),
            LogCap.File(app: "a", id: "a.web.1-now", size: 100, modified: t + 2), LogCap.File(app: "a", id: "a.web.2-run", size: 500, modified: t + 3),
            LogCap.File(app: "b", id: "b.web.1-old", size: 50, modified: t),
        ]
        // a holds 800 bytes against a cap of 650: the oldest file goes whole, the next loses its first 50 bytes; b is under its cap.
        XCTAssertEqual(LogCap.plan(files, capPerApp: 650), [.init(id: "a.web.1-mid", bytes: 50), .init(id: "a.web.1-old", bytes: 100)])
        XCTAssertEqual(LogCap.plan(files, capPerApp: 10_000), [])
        // Cap 0: everything goes, the running process's log too (its newest lines are written after the cut).
        XCTAssertEqual(LogCap.plan(files, capPerApp: 0).map(\.bytes).reduce(0, +), 850)
    }

    func testTheLogCapKeepsTheNewestLinesOnDisk() throws {
        let dir = NSTemporaryDirectory() + "logcap-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var text = ""
        for i in 0..<20_000 { text += LogLine.format(Date(timeIntervalSince1970: 1_800_000_000 + Double(i)), tag: "o", "line \(i)") + "\n" }
        try text.write(toFile: dir + "/a.web.1-x.log", atomically: false, encoding: .utf8)
        let cuts = LogCap.sweep(directory: dir, capPerApp: 200_000)
        XCTAssertEqual(cuts.count, 1)
        let kept = try String(contentsOfFile: dir + "/a.web.1-x.log", encoding: .utf8)
        XCTAssertLessThan(kept.utf8.count, text.utf8.count)
        let lines = kept.split(separator: "\n").compactMap { LogLine.parse($0) }
        // The newest line is kept; the oldest is gone; the last line says what was dropped.
        XCTAssertTrue(lines.contains { $0.text == "line 19999" })
        XCTAssertFalse(lines.contains { $0.text == "line 0" })
        XCTAssertEqual(lines.last?.tag, UInt8(ascii: "k"))
        XCTAssertTrue(lines.last?.text.contains("dropped the oldest") ?? false)
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
