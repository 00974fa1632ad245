import Cluster
import Foundation
import KbuildCore
import NodeAgent
import Router
import Trace
import XCTest
import KbuildState

/// Small pure decisions beside the planner: the log cap, trace's targets, log lines.
final class SmallDecisionsTests: XCTestCase {
    /// The router's table: healthy web processes on live nodes, and only those
    /// their node's assignment still holds (a retired one leaves as the
    /// scheduler drops it, before its node says it is stopping).
    func testRoutesAreTheHealthyWebProcessesTheAssignmentsStillHold() {
        let t = Date(timeIntervalSince1970: 1_800_000_000)
        let image = KID(hashing: Data("image".utf8))
        func assigned(_ app: String, _ type: String, _ index: Int) -> AssignedProcess {
            let spec = ProcessSpec(app: app, type: type, image: image, config: image, command: "run", memory: 1 << 20, cpus: 0.1, health: nil, generation: 0)
            return AssignedProcess(index: index, spec: spec, release: image, version: 1, assignedAt: t)
        }
        func status(_ p: AssignedProcess, _ state: ProcessState) -> ProcessStatus {
            ProcessStatus(id: p.id, app: p.spec.app, type: p.spec.type, name: p.name, state: state, process: nil, hostPID: 1,
                          port: 30000 + p.index, address: "10.0.0.\(p.index)", restarts: 0, lastExit: nil, since: t)
        }
        let old = assigned("a", "web", 1), new = assigned("a", "web", 2), starting = assigned("a", "web", 3)
        let worker = assigned("a", "worker", 4), stopping = assigned("b", "web", 5), other = assigned("b", "web", 6)
        let record = NodeRecord(name: "n1", address: "127.0.0.1", capacity: Resources(memory: 1 << 30, cpus: 2), network: "kbuild", agentPID: 1, startedAt: t)
        let statuses = NodeStatus(node: "n1", at: t, lease: 10, processes: [
            status(old, .healthy), status(new, .healthy), status(starting, .starting), status(worker, .healthy),
            status(stopping, .stopping), status(other, .healthy),
        ])
        let holding = Assignment(node: "n1", processes: [new, starting, worker, stopping, other])
        let routes = RouteFeed.endpoints(nodes: [(record, statuses, holding)], now: t + 1)
        XCTAssertEqual(routes["a"]?.map(\.process), [new.id], "the retired process is out as soon as the assignment drops it")
        XCTAssertEqual(routes["b"]?.map(\.process), [other.id])
        XCTAssertEqual(routes["a"]?.first?.host, "10.0.0.2")
        XCTAssertEqual(routes["a"]?.first?.port, 30002)
        // Before the drop both serve; a node without an assignment serves nothing; a node silent for minutes serves nothing.
        let both = Assignment(node: "n1", processes: [old, new])
        XCTAssertEqual(RouteFeed.endpoints(nodes: [(record, statuses, both)], now: t + 1)["a"]?.map(\.process), [old.id, new.id].sorted())
        XCTAssertTrue(RouteFeed.endpoints(nodes: [(record, statuses, nil)], now: t + 1).isEmpty)
        XCTAssertFalse(RouteFeed.endpoints(nodes: [(record, statuses, holding)], now: t + 60).isEmpty, "a minute's silence: the scheduler decides")
        XCTAssertTrue(RouteFeed.endpoints(nodes: [(record, statuses, holding)], now: t + RouteFeed.silentFor + 1).isEmpty)
        // A node that reports its assigned process as another app's routes nothing to that app (nor to its own).
        var forged = status(other, .healthy)
        forged.app = "victim"
        let lying = NodeStatus(node: "n1", at: t, lease: 10, processes: [forged])
        let hijack = RouteFeed.endpoints(nodes: [(record, lying, holding)], now: t + 1)
        XCTAssertNil(hijack["victim"])
        XCTAssertNil(hijack["b"])
    }

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
