import Foundation
import XCTest

/// `kbuild logs APP`: every line, whole and timed, across a redeploy and a restart of kbuild.
final class LogsTests: XCTestCase {
    /// `--tail`: one response the server pushes lines down as they are written, in order, none twice or
    /// lost, the lines of a process started meanwhile too.
    func testTailIsPushedAsLinesAreWrittenIncludingANewProcesss() throws {
        let data = try makeData("logs-tail")
        _ = try startKbuildUp(self, data: data)
        let serve = """
            #!/bin/sh
            (n=0; while true; do echo "tick-$n"; n=$((n+1)); sleep 0.1; done) &
            exec busybox httpd -f -p "0.0.0.0:$PORT" -h www
            """
        let work = try makeApp("ticker", data: data, serve: serve)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        try waitUntil("a tick in the logs") { try kbuild(["logs", "ticker"], dataDir: data).stdout.contains("tick-") }
        let out = try tempDir(self, "tail-out") + "/out"
        XCTAssertTrue(FileManager.default.createFile(atPath: out, contents: nil))
        let tail = Process()
        tail.executableURL = URL(fileURLWithPath: kbuildBinary)
        tail.arguments = ["logs", "ticker", "--tail", "--lines", "1", "--data-dir", data]
        tail.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        try tail.run()
        defer { if tail.isRunning { tail.terminate() }; tail.waitUntilExit() }
        func ticks(of process: String) throws -> [Int] {
            try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").filter { $0.contains(" \(process) ") && $0.contains(": tick-") }
                .compactMap { Int($0.split(separator: "-").last ?? "") }
        }
        try waitUntil("30 ticks pushed", timeout: 20) { try ticks(of: "web.1").count >= 30 }
        // A restart: the new process's lines come down the same response.
        let before = try String(contentsOfFile: out, encoding: .utf8).count
        XCTAssertEqual(try kbuild(["ps:restart", "ticker"], dataDir: data).status, 0)
        try waitUntil("the new process's first ticks", timeout: 30) {
            let text = try String(contentsOfFile: out, encoding: .utf8)
            return text.count > before && text.dropFirst(before).contains(": tick-0\n")
        }
        XCTAssertTrue(tail.isRunning, "the tail ended")
        tail.terminate()
        tail.waitUntilExit()
        // In order, each once, no gap, for the first process (the second one's numbering starts again at 0).
        let text = try String(contentsOfFile: out, encoding: .utf8)
        let firstRun = text.split(separator: "\n").filter { $0.contains(": tick-") }.map { Int($0.split(separator: "-").last!)! }
        let restartAt = try XCTUnwrap(firstRun.dropFirst().firstIndex(of: 0))
        let ticksBefore = Array(firstRun[..<restartAt])
        XCTAssertEqual(ticksBefore, Array(ticksBefore.first!...ticksBefore.last!), "ticks lost, repeated or out of order: \(ticksBefore)")
        XCTAssertGreaterThanOrEqual(ticksBefore.count, 30)
    }

    func testLinesAreWholeTimedAndSurviveRedeployAndRestart() throws {
        let data = try makeData("logs")
        var up = try startKbuildUp(self, data: data)
        // Two writers at full speed (stdout and stderr), and a tick every 0.2 s that runs on.
        let serve = """
            #!/bin/sh
            (i=0; while [ $i -lt 20000 ]; do echo "out-line-$i-xxxxxxxxxxxxxxxxxxxxxxxx"; i=$((i+1)); done) &
            (i=0; while [ $i -lt 20000 ]; do echo "err-line-$i-yyyyyyyyyyyyyyyyyyyyyyyy" >&2; i=$((i+1)); done) &
            (n=0; while true; do echo "tick-$n"; n=$((n+1)); sleep 0.2; done) &
            exec busybox httpd -f -p "0.0.0.0:$PORT" -h www
            """
        let work = try makeApp("chatty", data: data, serve: serve)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        let first = String(trimmed(try git(["rev-parse", "HEAD"], in: work).stdout).prefix(7))
        func logs(_ extra: [String] = []) throws -> [Substring] {
            try kbuild(["logs", "chatty", "--since", "1h"] + extra, dataDir: data).stdout.split(separator: "\n")
        }
        try waitUntil("40,000 lines", timeout: 60) { try logs().filter { $0.contains("-line-") }.count >= 40_000 }
        // Every line whole: its time, process, commit, and the writer's text exactly; none lost, none twice.
        var seen: [String: Set<Int>] = ["out": [], "err": []]
        let pattern = try NSRegularExpression(pattern: "^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{6}Z web\\.1(\\[err\\])? \(first): (out|err)-line-(\\d+)-(x{24}|y{24})$")
        for line in try logs() where line.contains("-line-") {
            let s = String(line)
            guard let m = pattern.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) else { XCTFail("not a whole line: \(s)"); continue }
            let stream = String(s[Range(m.range(at: 2), in: s)!]), n = Int(s[Range(m.range(at: 3), in: s)!])!
            XCTAssertEqual(stream == "err", m.range(at: 1).location != NSNotFound, "stderr lines are marked: \(s)")
            XCTAssertTrue(seen[stream]!.insert(n).inserted, "twice: \(s)")
        }
        XCTAssertEqual(seen["out"]!.count, 20_000)
        XCTAssertEqual(seen["err"]!.count, 20_000)

        // kbuild up killed for 3 s: the process and its log go on; after the restart the ticks have no gap.
        kill(up.process.processIdentifier, SIGKILL)
        up.process.waitUntilExit()
        let down = Date()
        sleep(3)
        // The same port: the app's git remote names it.
        up = try startKbuildUp(self, data: data, port: URL(string: up.url)?.port ?? 0)
        try waitUntil("ticks after the restart") {
            let ticks = try logs().filter { $0.contains("tick-") }
            return ticks.contains { LogTime.of($0) ?? .distantPast > down.addingTimeInterval(4) }
        }
        let ticks = try logs().compactMap { line -> Int? in
            guard let r = line.range(of: ": tick-") else { return nil }
            return Int(line[r.upperBound...])
        }
        XCTAssertEqual(ticks, Array(ticks.first!...ticks.last!), "every tick, in order, the ones written while kbuild was down too")

        // A redeploy: the old process's lines stay, under its commit; --release picks one release.
        try writeFile(work + "/www/index.html", "second\n")
        try git(["commit", "-q", "-am", "Second"], in: work)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        let second = String(trimmed(try git(["rev-parse", "HEAD"], in: work).stdout).prefix(7))
        try waitUntil("the new process logs") { try logs().contains { $0.contains(" \(second): ") } }
        XCTAssertTrue(try logs().contains { $0.contains(" \(first): out-line-0-") }, "the first release's lines are kept")
        let onlyFirst = try logs(["--release", "v1"])
        XCTAssertFalse(onlyFirst.isEmpty)
        XCTAssertTrue(onlyFirst.allSatisfy { $0.contains(" \(first): ") })
        let last = try kbuild(["logs", "chatty", "--lines", "5"], dataDir: data).stdout.split(separator: "\n")
        XCTAssertEqual(last.count, 5)
    }
}

enum LogTime {
    static func of(_ line: Substring) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: String(line.prefix(27)))
    }
}
