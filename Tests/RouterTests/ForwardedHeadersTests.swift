import NIOHTTP1
@testable import Router
import XCTest

final class ForwardedHeadersTests: XCTestCase {
    /// The response rewrite edits the backend's headers in place; what it
    /// drops and keeps must match RFC 9110 §7.6.1 all the same.
    func testResponseDropsHopByHopHeaders() {
        let cases: [(backend: [(String, String)], expected: [(String, String)])] = [
            (
                [("Server", "nginx"), ("Content-Length", "5"), ("Connection", "keep-alive")],
                [("Server", "nginx"), ("Content-Length", "5")]
            ),
            (
                [("Connection", " Keep-Alive , X-Secret,,close"), ("X-Secret", "hop"), ("x-kept", "1"),
                 ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Upgrade", "h2c"), ("X-Request-Id", "backend's")],
                [("x-kept", "1")]
            ),
            (
                [("Transfer-Encoding", "gzip, chunked"), ("Trailer", "x-sum"), ("Proxy-Connection", "keep-alive")],
                [("transfer-encoding", "chunked")]
            ),
            (
                [("Transfer-Encoding", "chunked"), ("Date", "today")],
                [("Transfer-Encoding", "chunked"), ("Date", "today")]
            ),
        ]
        for (backend, expected) in cases {
            let result = ForwardedHeaders.response(from: HTTPHeaders(backend), requestID: "id-1", traceID: "id-1")
            let pairs = result.map { "\($0.name): \($0.value)" }
            XCTAssertEqual(pairs, expected.map { "\($0.0): \($0.1)" } + ["x-request-id: id-1"], "\(backend)")
        }
    }
}
