import XCTest
import Foundation

/// `kbuild up` as a user runs it: a real process, a real socket, real curl.
final class UpServerTests: XCTestCase {
    struct Server {
        let process: Process
        let url: String
        let token: String
    }

    func startUp(_ data: String) throws -> Server {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: kbuildBinary)
        p.arguments = ["up", "--port", "0", "--data-dir", data]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.standardError
        try p.run()
        addTeardownBlock { if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        // Read the startup lines (bounded): one line per thing served.
        var text = ""
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && !text.contains("/v1/objects/\n") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("keg ") }),
              let range = line.range(of: "http://") else {
            XCTFail("no keg URL in startup output: \(text)")
            throw CocoaError(.fileReadUnknown)
        }
        let url = String(line[range.lowerBound...]).replacingOccurrences(of: "/v1/objects/", with: "")
        let token = try String(contentsOfFile: data + "/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return Server(process: p, url: url, token: token)
    }

    /// curl, returning status code, headers and body.
    func curl(_ args: [String]) throws -> (code: Int, headers: String, body: Data) {
        let dir = NSTemporaryDirectory() + "curl-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let r = try sh("/usr/bin/curl", ["-sS", "-o", dir + "/body", "-D", dir + "/headers", "-w", "%{http_code}", "--max-time", "30"] + args)
        let body = (try? Data(contentsOf: URL(fileURLWithPath: dir + "/body"))) ?? Data()
        let headers = (try? String(contentsOfFile: dir + "/headers", encoding: .utf8)) ?? ""
        return (Int(r.stdout) ?? -1, headers.lowercased(), body)
    }

    func testUpServesObjectsByKIDWithAuthRangesAndClearErrors() throws {
        let dir = try tempDir(self, "up")
        let data = dir + "/data"
        let server = try startUp(data)
        var st = stat()
        XCTAssertEqual(stat(data + "/admin.token", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600, "the admin token is private")
        XCTAssertTrue(server.token.hasPrefix("kb_"))

        // Objects put by the CLI while the server runs are served at once.
        let small = Data("hello from the keg\n".utf8)
        try small.write(to: URL(fileURLWithPath: dir + "/small"))
        var big = Data(count: 5 << 20)
        for i in 0..<big.count { big[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 13) }
        try big.write(to: URL(fileURLWithPath: dir + "/big"))
        let smallKID = try kbuild(["keg", "put", dir + "/small"], dataDir: data).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let bigKID = try kbuild(["keg", "put", dir + "/big"], dataDir: data).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let auth = ["-H", "Authorization: Bearer \(server.token)"]
        let objects = server.url + "/v1/objects/"

        // No token, a wrong token: 401, and nothing about the object.
        let anonymous = try curl([objects + smallKID])
        XCTAssertEqual(anonymous.code, 401)
        XCTAssertFalse(String(decoding: anonymous.body, as: UTF8.self).contains("hello"))
        XCTAssertEqual(try curl(["-H", "Authorization: Bearer kb_wrong", objects + smallKID]).code, 401)
        XCTAssertEqual(try curl([server.url + "/healthz"]).code, 200)

        let get = try curl(auth + [objects + smallKID])
        XCTAssertEqual(get.code, 200)
        XCTAssertEqual(get.body, small)
        XCTAssertTrue(get.headers.contains("etag: \"\(smallKID.lowercased())\""), get.headers)
        XCTAssertTrue(get.headers.contains("docker-content-digest: sha256:\(smallKID.dropFirst(2))"), get.headers)
        // Basic auth with the token as the password, as git and docker send it.
        XCTAssertEqual(try curl(["-u", "admin:\(server.token)", objects + smallKID]).body, small)

        // With -I curl writes the headers where the body would go; a HEAD response has no body.
        let head = try curl(auth + ["-I", objects + bigKID])
        let headHeaders = String(decoding: head.body, as: UTF8.self).lowercased()
        XCTAssertEqual(head.code, 200)
        XCTAssertTrue(headHeaders.contains("content-length: \(big.count)"), headHeaders)
        XCTAssertTrue(headHeaders.contains("accept-ranges: bytes"), headHeaders)
        XCTAssertTrue(headHeaders.contains("kbuild-kind: file"), headHeaders)

        let whole = try curl(auth + [objects + bigKID])
        XCTAssertEqual(whole.body, big, "a chunked file streams back whole")
        let part = try curl(auth + ["-H", "Range: bytes=100000-3000000", objects + bigKID])
        XCTAssertEqual(part.code, 206)
        XCTAssertEqual(part.body, big[100000...3000000])
        XCTAssertTrue(part.headers.contains("content-range: bytes 100000-3000000/\(big.count)"), part.headers)
        let suffix = try curl(auth + ["-H", "Range: bytes=-7", objects + smallKID])
        XCTAssertEqual(suffix.code, 206)
        XCTAssertEqual(suffix.body, small.suffix(7))

        let beyond = try curl(auth + ["-H", "Range: bytes=\(small.count)-", objects + smallKID])
        XCTAssertEqual(beyond.code, 416)
        XCTAssertTrue(beyond.headers.contains("content-range: bytes */\(small.count)"), beyond.headers)
        XCTAssertTrue(String(decoding: beyond.body, as: UTF8.self).contains("beyond the end"))

        let missing = try curl(auth + [objects + "K-" + String(repeating: "0", count: 64)])
        XCTAssertEqual(missing.code, 404)
        XCTAssertTrue(String(decoding: missing.body, as: UTF8.self).contains("not in the Keg"))
        let malformed = try curl(auth + [objects + "K-nothex"])
        XCTAssertEqual(malformed.code, 400)
        XCTAssertTrue(String(decoding: malformed.body, as: UTF8.self).contains("failed to parse KID"))

        // Another host pulls a whole tree it lacks, verified object by object.
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
        try small.write(to: URL(fileURLWithPath: tree + "/small"))
        try big.write(to: URL(fileURLWithPath: tree + "/sub/big"))
        try FileManager.default.createSymbolicLink(atPath: tree + "/link", withDestinationPath: "sub/big")
        let treeKID = try kbuild(["keg", "put", tree], dataDir: data).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let other = dir + "/other-host"
        let denied = try kbuild(["keg", "pull", treeKID, "--from", server.url, "--token", "kb_wrong"], dataDir: other)
        XCTAssertNotEqual(denied.status, 0)
        XCTAssertTrue(denied.stderr.contains("HTTP 401"), denied.stderr)
        let pull = try kbuild(["keg", "pull", treeKID, "--from", server.url], dataDir: other, env: ["KBUILD_TOKEN": server.token])
        XCTAssertEqual(pull.status, 0, pull.stderr)
        XCTAssertTrue(pull.stdout.contains("pulled \(treeKID): 4 objects"), pull.stdout)
        let restored = try kbuild(["keg", "get", treeKID, dir + "/pulled"], dataDir: other)
        XCTAssertEqual(restored.status, 0, restored.stderr)
        XCTAssertEqual(try sh("/usr/bin/diff", ["-r", "--no-dereference", tree, dir + "/pulled"]).status, 0)
        let again = try kbuild(["keg", "pull", treeKID, "--from", server.url], dataDir: other, env: ["KBUILD_TOKEN": server.token])
        XCTAssertTrue(again.stdout.contains("0 objects") && again.stdout.contains("1 already here"), again.stdout)
        let absent = try kbuild(["keg", "pull", "K-" + String(repeating: "0", count: 64), "--from", server.url], dataDir: other, env: ["KBUILD_TOKEN": server.token])
        XCTAssertTrue(absent.stderr.contains("HTTP 404"), absent.stderr)

        // Graceful shutdown on SIGTERM, within a bounded time.
        kill(server.process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while server.process.isRunning && Date() < deadline { usleep(50_000) }
        XCTAssertFalse(server.process.isRunning, "kbuild up should stop on SIGTERM")
        XCTAssertEqual(server.process.terminationStatus, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: data + "/server.url"))
    }
}
