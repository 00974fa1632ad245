import NIOCore
import NIOHTTP1
@testable import Router
import XCTest

/// The byte-level pieces of the proxy: the backend's response head read and rewritten without
/// `HTTPHeaders`, chunked bodies followed as they arrive, and the request head written by hand.
final class ForwardedHeadersTests: XCTestCase {
    private func parse(_ text: String) -> (ResponseHead.Parse, ByteBuffer) {
        let buffer = ByteBuffer(string: text)
        var fields: [ResponseHead.Field] = []
        return (buffer.withUnsafeReadableBytes { ResponseHead.parse($0, fields: &fields) }, buffer)
    }

    private func head(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> (ResponseHead, ByteBuffer)? {
        let (parsed, buffer) = parse(text)
        guard case .head(let head) = parsed else {
            XCTFail("not a head: \(parsed) for \(text.debugDescription)", file: file, line: line)
            return nil
        }
        return (head, buffer)
    }

    /// What the router drops and keeps must match RFC 9110 §7.6.1; its own fields come last.
    func testResponseDropsHopByHopHeaders() throws {
        let cases: [(backend: [(String, String)], expected: [String])] = [
            ([("Server", "nginx"), ("Content-Length", "5"), ("Connection", "keep-alive")], ["Server: nginx", "Content-Length: 5"]),
            (
                [("Connection", " Keep-Alive , X-Secret,,close"), ("X-Secret", "hop"), ("x-kept", "1"),
                 ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Upgrade", "h2c"), ("X-Request-Id", "backend's")],
                ["x-kept: 1"]
            ),
            ([("Transfer-Encoding", "gzip, chunked"), ("Trailer", "x-sum"), ("Proxy-Connection", "keep-alive")],
             ["Transfer-Encoding: gzip, chunked"]),
            // A Connection token never removes a framing field.
            ([("Connection", "content-length, transfer-encoding"), ("Content-Length", "0")], ["Content-Length: 0"]),
            ([("Date", "today"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], ["Date: today", "Set-Cookie: a=1", "Set-Cookie: b=2"]),
        ]
        for (backend, expected) in cases {
            let text = "HTTP/1.1 200 OK\r\n" + backend.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n"
            guard let (head, bytes) = head(text) else { continue }
            var out = ByteBuffer()
            bytes.withUnsafeReadableBytes { raw in
                head.write(from: raw, into: &out, http10: false, keepTransferEncoding: true, keepUpgrade: false) {
                    $0.writeString("x-request-id: id-1\r\n")
                }
            }
            let written = String(buffer: out)
            XCTAssertEqual(written, "HTTP/1.1 200 OK\r\n" + (expected + ["x-request-id: id-1"]).map { $0 + "\r\n" }.joined() + "\r\n", "\(backend)")
            // The same fields, for an HTTP/2 client (no Transfer-Encoding there).
            let headers = bytes.withUnsafeReadableBytes { head.headers(from: $0) }
            XCTAssertEqual(headers.map { "\($0.name): \($0.value)" }, expected.filter { !$0.hasPrefix("Transfer-Encoding") })
        }
    }

    func testFramingAndKeepAlive() throws {
        let cases: [(String, Bool, ResponseHead.Framing, Bool)] = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false, .length(12), true),
            ("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Length: 12\r\n\r\n", false, .length(12), true),
            ("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true, .none, true),
            ("HTTP/1.1 204 No Content\r\nContent-Length: 12\r\n\r\n", false, .none, true),
            ("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", false, .none, true),
            ("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", false, .none, true),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, .chunked, true),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n", false, .chunked, true),
            ("HTTP/1.1 200 OK\r\n\r\n", false, .untilClose, true),
            ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false, .length(1), false),
            ("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, .length(1), false),
            ("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n", false, .length(1), true),
            ("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, .length(0), true),
        ]
        for (text, wasHEAD, framing, keepAlive) in cases {
            guard let (head, _) = head(text) else { continue }
            XCTAssertEqual(head.framing(requestWasHEAD: wasHEAD), framing, text.debugDescription)
            XCTAssertEqual(head.keepAlive, keepAlive, text.debugDescription)
            XCTAssertEqual(head.length, text.utf8.count)
        }
        // The head is found wherever the read ends: until its blank line, it is incomplete.
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        for cut in 0..<(text.utf8.count - 3) {
            guard case .incomplete = parse(String(text.utf8.prefix(cut))!).0 else {
                XCTFail("complete at \(cut)")
                continue
            }
        }
        XCTAssertEqual(head(text)?.0.length, text.utf8.count - 3)
    }

    /// A backend that breaks HTTP/1.1's framing rules gets a 502, with the reason logged.
    func testInvalidResponseHeads() {
        let cases: [(String, String)] = [
            ("HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n", "CRLF"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\n\r\n", "CRLF"),
            ("HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", "folded"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "both"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "two different"),
            ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "not a number"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n", "not a number"),
            ("HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n", "token"),
            ("HTTP/1.1 200 OK\r\n: 1\r\n\r\n", "name"),
            ("HTTP/1.1 200 OK\r\nX-A 1\r\n\r\n", "token"),
            ("HTTP/1.1 200 OK\r\nX-A: a\u{0}b\r\n\r\n", "control"),
            ("HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n", "CRLF"),
            ("HTTP/2 200 OK\r\n\r\n", "status line"),
            ("HTTP/1.1 20 OK\r\n\r\n", "status line"),
            ("HTTP/1.1 2000 OK\r\n\r\n", "status line"),
            ("ICY 200 OK\r\n\r\n", "status line"),
            ("HTTP/1.1 200 OK\r\nX-Big: " + String(repeating: "a", count: 70_000), "longer than"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "malformed Transfer-Encoding"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip chunked\r\n\r\n", "malformed Transfer-Encoding"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "malformed Transfer-Encoding"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "does not end in chunked"),
            ("HTTP/1.1 099 Odd\r\n\r\n", "status code"),
            ("HTTP/1.1 600 Odd\r\n\r\n", "status code"),
        ]
        for (text, reason) in cases {
            guard case .invalid(let why) = parse(text).0 else {
                XCTFail("accepted: \(text.prefix(80).debugDescription)")
                continue
            }
            XCTAssertTrue(why.contains(reason), "\(why) for \(text.prefix(80).debugDescription)")
        }
    }

    /// A chunked body is followed however its bytes are split, its data found, and its end found
    /// exactly (bytes behind it are not the body's).
    func testChunkedScanner() throws {
        let body = "5;ext=1\r\nhello\r\n1A\r\n" + String(repeating: "x", count: 26) + "\r\n0\r\nX-Sum: 1\r\n\r\n"
        let bytes = Array((body + "NEXT").utf8)
        for split in 0...bytes.count {
            var scanner = ChunkedScanner()
            var data: [UInt8] = []
            var consumed = 0
            for part in [Array(bytes[..<split]), Array(bytes[split...])] {
                let used = try part.withUnsafeBytes { raw in
                    try scanner.scan(raw) { range in data += raw[range] }
                }
                consumed += used
                if scanner.isDone { break }
            }
            XCTAssertTrue(scanner.isDone, "split at \(split)")
            XCTAssertEqual(consumed, body.utf8.count, "split at \(split)")
            XCTAssertEqual(String(decoding: data, as: UTF8.self), "hello" + String(repeating: "x", count: 26))
        }
        var spaced = ChunkedScanner()
        XCTAssertEqual(try Array("2 ;x=1\r\nok\r\n0\r\n\r\n".utf8).withUnsafeBytes { try spaced.scan($0) { _ in } }, 17)
        for bad in ["5 5\r\n", "5 \r\n", "g\r\n", "\r\n", "5\nhello\r\n", "5\r\nhelloX\r\n", "1234567890abcdef0\r\n", "0\r\n\n", "0\r\nX: 1\n\r\n"] {
            var scanner = ChunkedScanner()
            XCTAssertThrowsError(try Array(bad.utf8).withUnsafeBytes { try scanner.scan($0) { _ in } }, bad.debugDescription)
        }
    }

    /// The request head a backend gets: the client's fields without hop-by-hop ones or those the
    /// router sets, `Transfer-Encoding: chunked` once, the router's fields after.
    func testRequestHeadWrittenByHand() {
        let headers = HTTPHeaders([
            ("Host", "shop.localhost"), ("Connection", "keep-alive, X-Hop, Content-Length"), ("X-Hop", "1"),
            ("Keep-Alive", "5"), ("X-Forwarded-Proto", "spoofed"), ("Accept", "*/*"), ("Content-Length", "3"),
            ("X-Request-Id", "client-id"), ("TE", "trailers"),
        ])
        let request = ForwardedHeaders.request(from: headers)
        XCTAssertEqual(request.host, "shop.localhost")
        XCTAssertEqual(request.requestID, "client-id")
        XCTAssertEqual(request.contentLength, 3)
        var out = ByteBuffer()
        ForwardedHeaders.writeRequest(method: .POST, uri: "/a?b=1", headers: headers, request: request, into: &out) {
            $0.writeString("x-request-id: r\r\n")
        }
        XCTAssertEqual(
            String(buffer: out), "POST /a?b=1 HTTP/1.1\r\ncontent-length: 3\r\nAccept: */*\r\nx-request-id: r\r\n\r\n")
        // A length as HTTP/2's codec may let it through goes on as the number; two different ones are refused.
        XCTAssertEqual(ForwardedHeaders.request(from: HTTPHeaders([("content-length", "5")])).contentLength, 5)
        for bad in [[("content-length", "+5")], [("content-length", "5, 5")], [("content-length", "5"), ("content-length", "6")]] {
            XCTAssertFalse(ForwardedHeaders.request(from: HTTPHeaders(bad)).contentLengthValid, "\(bad)")
        }

        let chunked = HTTPHeaders([("Transfer-Encoding", "chunked"), ("Upgrade", "websocket"), ("Connection", "Upgrade")])
        let upgrade = ForwardedHeaders.request(from: chunked)
        XCTAssertTrue(upgrade.chunked)
        XCTAssertEqual(upgrade.upgrade, "websocket")
        var second = ByteBuffer()
        ForwardedHeaders.writeRequest(method: .GET, uri: "/", headers: chunked, request: upgrade, into: &second) { _ in }
        XCTAssertEqual(String(buffer: second), "GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n")
    }
}
