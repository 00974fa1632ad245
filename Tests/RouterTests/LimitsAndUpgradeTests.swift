import Foundation
import Logging
import NIOCore
import Router
import XCTest

/// The router's limits, its answers to bad input, and upgraded connections (WebSockets), against
/// real python3 backends over real sockets.
final class LimitsAndUpgradeTests: XCTestCase {
    var backends: [TestBackend] = []
    var router: RunningRouter?

    override func tearDown() async throws {
        try await router?.stop()
        router = nil
        for backend in backends { backend.stop() }
        backends = []
    }

    private func backend(_ name: String) throws -> TestBackend {
        let backend = try TestBackend(name: name)
        backends.append(backend)
        return backend
    }

    private func startRouter(
        _ apps: [String: [Endpoint]], settings: [String: AppRouting] = [:], crashed: Set<String> = [],
        configuration: RouterConfiguration = RouterConfiguration()
    ) async throws -> (RouteTable, Int) {
        let table = RouteTable()
        table.update(apps: apps, domains: [:], settings: settings, crashed: crashed)
        let router = try await RunningRouter.start(table: table, configuration: configuration)
        self.router = router
        return (table, router.port)
    }

    /// Each attempt to frame a body two ways is refused with 400 and the connection closed; no
    /// smuggled request reaches the backend.
    func testSmugglingAttemptsAreRefused() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        let attempts: [(String, String)] = [
            ("CL and TE", "POST / HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: shop.localhost\r\n\r\n"),
            ("two CLs", "POST / HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd"),
            ("obs-fold", "GET / HTTP/1.1\r\nHost: shop.localhost\r\nX-Folded: a\r\n b\r\n\r\n"),
            ("bad chunk size", "POST / HTTP/1.1\r\nHost: shop.localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            ("negative chunk size", "POST / HTTP/1.1\r\nHost: shop.localhost\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
            ("space before colon", "GET / HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length : 5\r\n\r\nhello"),
        ]
        try await blocking {
            for (what, request) in attempts {
                let connection = try TestConnection(port: port)
                try connection.send(request)
                let answer = try connection.readResponse(method: "POST")
                XCTAssertEqual(answer.status, 400, "\(what): \(answer.text)")
                XCTAssertEqual(answer.headers["x-request-id"]?.count, 32, "\(what): the page carries a request id")
                XCTAssertTrue(connection.isClosedByPeer(), "\(what): closed after the refusal")
            }
            // A bare LF as a line end is refused too (RFC 9112 §2.2 allows a server to; a proxy that
            // accepted it would have to be sure its backend reads the lines the same way).
            let bare = try TestConnection(port: port)
            try bare.send("GET /bare HTTP/1.1\nHost: shop.localhost\n\n")
            XCTAssertEqual(try bare.readResponse().status, 400)
            XCTAssertEqual(try fetch(port: port, "GET", "/good", host: "shop.localhost").status, 200)
        }
        let served = try await XCTUnwrap(router).served(count: attempts.count + 2)
        // A malformed chunk is found after the head was routed (an endpoint chosen), in the same read: the
        // exchange ends with 400 before anything is sent. What the backend itself read: the good request only.
        let routed = served.filter { $0.endpoint != nil }
        XCTAssertEqual(routed.map(\.uri), ["/", "/", "/good"], "\(routed)")
        XCTAssertEqual(routed.map(\.status), [400, 400, 200])
        XCTAssertEqual(web.requestLines, ["GET /good"])
    }

    /// A client that lists the body's framing header in Connection (`Connection: content-length`) does not
    /// make the router drop it: the body stays a body and never becomes a request of its own.
    func testConnectionCannotRemoveFraming() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            let inner = "GET /smuggled HTTP/1.1\r\nHost: shop.localhost\r\n\r\n"
            let connection = try TestConnection(port: port)
            try connection.send("POST /outer HTTP/1.1\r\nHost: shop.localhost\r\nConnection: keep-alive, content-length\r\n"
                                + "Content-Length: \(inner.utf8.count)\r\n\r\n" + inner)
            let answer = try connection.readResponse(method: "POST")
            XCTAssertEqual(answer.status, 200)
            XCTAssertEqual(try answer.json()["bodyBytes"] as? Int, inner.utf8.count, "the body arrived as a body")
            // The pooled backend connection serves the next request as itself.
            XCTAssertEqual(try connection.request("GET", "/next", host: "shop.localhost").status, 200)
        }
        XCTAssertEqual(web.requestLines, ["POST /outer", "GET /next"])
    }

    /// Response framings the router must pass on exactly, on one keep-alive connection to the client:
    /// HEAD (a length, no body), 204 and 304 (no body), a 100 Continue before the answer, a chunked
    /// body, a body delimited by the backend's close (the client's connection stays open, the body gets a
    /// length of its own framing), and the next request after each.
    func testResponseFramings() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            let connection = try TestConnection(port: port)
            let head = try connection.request("HEAD", "/", host: "shop.localhost")
            XCTAssertEqual(head.status, 200)
            XCTAssertNotNil(head.headers["content-length"])
            XCTAssertTrue(head.body.isEmpty)
            for code in [204, 304] {
                let answer = try connection.request("GET", "/status?code=\(code)", host: "shop.localhost")
                XCTAssertEqual(answer.status, code)
                XCTAssertTrue(answer.body.isEmpty)
                XCTAssertEqual(answer.headers["etag"], "\"v1\"")
            }
            try connection.send("POST /upload HTTP/1.1\r\nHost: shop.localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            XCTAssertEqual(try connection.readHead().status, 100)
            try connection.send("hello")
            let posted = try connection.readResponse(method: "POST")
            XCTAssertEqual(posted.status, 200)
            XCTAssertEqual(try posted.json()["bodyBytes"] as? Int, 5)
            let chunked = try connection.request("GET", "/chunked", host: "shop.localhost")
            XCTAssertEqual(chunked.headers["transfer-encoding"], "chunked")
            XCTAssertEqual(try chunked.json()["path"] as? String, "/chunked")
            let closeDelimited = try connection.request("GET", "/close", host: "shop.localhost")
            XCTAssertEqual(closeDelimited.status, 200)
            XCTAssertEqual(closeDelimited.body.count, 14_000)
            let after = try connection.request("GET", "/after", host: "shop.localhost")
            XCTAssertEqual(try after.json()["path"] as? String, "/after", "the client's connection outlives the backend's")
        }
    }

    /// The backend's bytes as the router forwards them: an interim 103 is dropped; a head that breaks
    /// HTTP/1.1 is a 502 with a request id; a malformed chunk after the head cuts the connection; an
    /// HTTP/1.0 client gets a chunked body's data only, and the close.
    func testBackendResponsesForwardedAsBytes() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            let hints = try fetch(port: port, "GET", "/raw?kind=early-hints", host: "shop.localhost")
            XCTAssertEqual(hints.status, 200)
            XCTAssertEqual(hints.text, "ok")
            XCTAssertNotNil(hints.headers["x-request-id"])
            let dribbled = try fetch(port: port, "GET", "/raw?kind=dribble", host: "shop.localhost")
            XCTAssertEqual(dribbled.status, 200)
            XCTAssertEqual(dribbled.headers["x-slow"], "1")
            XCTAssertEqual(dribbled.text, "ok")
            for kind in ["two-framings", "bare-lf", "not-http"] {
                let broken = try fetch(port: port, "GET", "/raw?kind=\(kind)", host: "shop.localhost")
                XCTAssertEqual(broken.status, 502, kind)
                XCTAssertTrue(broken.text.contains("Request id"), broken.text)
            }
            let cut = try TestConnection(port: port)
            try cut.send("GET /raw?kind=bad-chunk HTTP/1.1\r\nHost: shop.localhost\r\n\r\n")
            XCTAssertThrowsError(try cut.readResponse(), "a body cut short by the router")

            let old = try TestConnection(port: port)
            let unchunked = try old.request("GET", "/chunked", host: "shop.localhost", version: "HTTP/1.0")
            XCTAssertEqual(unchunked.status, 200)
            XCTAssertNil(unchunked.headers["transfer-encoding"])
            XCTAssertEqual(try unchunked.json()["path"] as? String, "/chunked")
            XCTAssertTrue(old.isClosedByPeer())
            // Pipelined requests with bodies: each body reaches the backend once the response before it ended.
            let pipelined = try TestConnection(port: port)
            try pipelined.send(
                "POST /one HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 3\r\n\r\nabc"
                    + "POST /two HTTP/1.1\r\nHost: shop.localhost\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n")
            for (path, bytes) in [("/one", 3), ("/two", 4)] {
                let answer = try pipelined.readResponse(method: "POST")
                XCTAssertEqual(try answer.json()["path"] as? String, path)
                XCTAssertEqual(try answer.json()["bodyBytes"] as? Int, bytes)
            }
            let kept = try TestConnection(port: port)
            for path in ["/a", "/b"] {
                let answer = try kept.request("GET", path, host: "shop.localhost", headers: [("Connection", "keep-alive")], version: "HTTP/1.0")
                XCTAssertEqual(answer.headers["connection"]?.lowercased(), "keep-alive")
                XCTAssertEqual(try answer.json()["path"] as? String, path)
            }
        }
        let served = try await XCTUnwrap(router).served(count: 12)
        XCTAssertEqual(served.filter { $0.status == 502 }.count, 3)
    }

    /// Host headers with a port, in capitals, with a trailing dot reach the app; an IPv6 literal or no
    /// Host is a 400 or 404 page, never a backend.
    func testHostVariants() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            for host in ["shop.localhost:\(port)", "SHOP.LocalHost", "shop.localhost.", "shop.localhost.:80"] {
                XCTAssertEqual(try fetch(port: port, host: host).status, 200, host)
            }
            XCTAssertEqual(try fetch(port: port, host: "[::1]:\(port)").status, 400)
            XCTAssertEqual(try fetch(port: port, host: "[::1]").status, 400)
            XCTAssertEqual(try fetch(port: port, host: "127.0.0.1").status, 404)
            XCTAssertEqual(try fetch(port: port, host: nil).status, 400)
            let http10 = try TestConnection(port: port).request("GET", "/", host: nil, version: "HTTP/1.0")
            XCTAssertEqual(http10.status, 400)
        }
    }

    /// A 1 MB header and too many header fields get 431 with a request id, and the connection closes.
    func testHugeHeadersGet431() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            let big = try TestConnection(port: port)
            let value = String(repeating: "a", count: 1 << 20)
            try? big.send("GET / HTTP/1.1\r\nHost: shop.localhost\r\nX-Big: \(value)\r\n\r\n")
            let answer = try big.readResponse()
            XCTAssertEqual(answer.status, 431)
            XCTAssertTrue(answer.text.contains("Request id"), answer.text)
            XCTAssertTrue(big.isClosedByPeer())

            let many = try TestConnection(port: port)
            let fields = (0..<150).map { "X-F\($0): v\r\n" }.joined()
            try many.send("GET / HTTP/1.1\r\nHost: shop.localhost\r\n\(fields)\r\n")
            XCTAssertEqual(try many.readResponse().status, 431)

            // Just under the limits is served.
            let fine = try fetch(port: port, host: "shop.localhost", headers: (0..<90).map { ("X-F\($0)", String(repeating: "v", count: 200)) })
            XCTAssertEqual(fine.status, 200)
        }
    }

    /// A head sent a byte a second is cut at the header timeout, while other clients are served meanwhile.
    func testSlowlorisIsCutAndOthersAreServed() async throws {
        let web = try backend("shop")
        var configuration = RouterConfiguration()
        configuration.headerReadTimeout = .seconds(2)
        let (_, port) = try await startRouter(["shop": [web.endpoint]], configuration: configuration)
        try await blocking {
            let slow = try TestConnection(port: port, timeoutSeconds: 10)
            let head = Array("GET / HTTP/1.1\r\nHost: shop.localhost\r\nX-Slow: 1234567890\r\n\r\n".utf8)
            let started = Date()
            var sent = 0
            var cut = false
            for byte in head {
                do { try slow.send([byte]) } catch { cut = true; break }
                sent += 1
                // Others are served while the slow head trickles in.
                if sent == 2 { XCTAssertEqual(try fetch(port: port, host: "shop.localhost").status, 200) }
                Thread.sleep(forTimeInterval: 0.25)
                if Date().timeIntervalSince(started) > 4 { break }
            }
            XCTAssertTrue(cut || slow.isClosedByPeer(), "the slow client was cut")
            XCTAssertLessThan(sent, head.count, "the head never completed")
            XCTAssertLessThan(Date().timeIntervalSince(started), 6)
        }
    }

    /// An app's own request timeout answers 504 with the request id, logged as H12.
    func testPerAppRequestTimeout() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint], "other": [web.endpoint]],
                                              settings: ["shop": AppRouting(requestTimeout: 1)])
        try await blocking {
            let started = Date()
            let timedOut = try fetch(port: port, "GET", "/slow?ms=2500", host: "shop.localhost")
            XCTAssertEqual(timedOut.status, 504)
            XCTAssertLessThan(Date().timeIntervalSince(started), 2.4)
            let id = try XCTUnwrap(timedOut.headers["x-request-id"])
            XCTAssertTrue(timedOut.text.contains(id), "the page names the request id")
            XCTAssertTrue(timedOut.text.contains("request timeout of 1 s"), timedOut.text)
            // Another app keeps the router's default (30 s).
            XCTAssertEqual(try fetch(port: port, "GET", "/slow?ms=1500", host: "other.localhost").status, 200)
        }
        let served = try await XCTUnwrap(router).served(count: 2)
        let line = try XCTUnwrap(served.first { $0.status == 504 }).logLine
        XCTAssertTrue(line.hasPrefix("at=error code=H12 desc=\"Request timeout\" method=GET path=\"/slow\""), line)
        XCTAssertTrue(line.contains("dyno=web.1"), line)
        XCTAssertTrue(line.contains("status=504"), line)
    }

    /// A body over the app's limit is refused with 413: at once when its length says so, and as soon
    /// as a chunked one passes it.
    func testBodyLimit() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]], settings: ["shop": AppRouting(bodyLimit: 1000)])
        try await blocking {
            let declared = try fetch(port: port, "POST", "/", host: "shop.localhost", body: [UInt8](repeating: 1, count: 5000))
            XCTAssertEqual(declared.status, 413)
            XCTAssertTrue(declared.text.contains("1000 bytes"), declared.text)

            let chunked = try TestConnection(port: port)
            let chunk = String(repeating: "x", count: 600)
            try chunked.send("POST / HTTP/1.1\r\nHost: shop.localhost\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n\(chunk)\r\n258\r\n\(chunk)\r\n")
            XCTAssertEqual(try chunked.readResponse(method: "POST").status, 413)
            XCTAssertTrue(chunked.isClosedByPeer())

            XCTAssertEqual(try fetch(port: port, "POST", "/", host: "shop.localhost", body: [UInt8](repeating: 1, count: 1000)).status, 200)
        }
    }

    /// One address may hold so many connections: the next is answered 429 and closed; once one
    /// closes, a new one is served.
    func testConnectionLimitPerClient() async throws {
        let web = try backend("shop")
        var configuration = RouterConfiguration()
        configuration.maxConnectionsPerClient = 3
        let (_, port) = try await startRouter(["shop": [web.endpoint]], configuration: configuration)
        try await blocking {
            var held = try (0..<3).map { _ in try TestConnection(port: port) }
            for connection in held { XCTAssertEqual(try connection.request(host: "shop.localhost").status, 200) }
            let refused = try TestConnection(port: port)
            let answer = try refused.readResponse()
            XCTAssertEqual(answer.status, 429)
            XCTAssertNotNil(answer.headers["retry-after"])
            XCTAssertTrue(refused.isClosedByPeer())
            held.removeLast()
            Thread.sleep(forTimeInterval: 0.3)
            XCTAssertEqual(try fetch(port: port, host: "shop.localhost").status, 200)
        }
    }

    /// Each event loop listens on the port with SO_REUSEPORT; a second router on a port already served
    /// is refused (it would otherwise share the connections), and the first goes on serving.
    func testSecondRouterOnTheSamePortIsRefused() async throws {
        let web = try backend("shop")
        let (table, port) = try await startRouter(["shop": [web.endpoint]])
        var logger = Logger(label: "second-router")
        logger.logLevel = .critical
        let second = RouterService(host: "127.0.0.1", port: port, table: table, logger: logger)
        do {
            try await second.run()
            XCTFail("a second router bound port \(port)")
        } catch {
            XCTAssertTrue("\(error)".lowercased().contains("address already in use"), "\(error)")
        }
        try await blocking {
            for _ in 0..<4 { XCTAssertEqual(try fetch(port: port, host: "shop.localhost").status, 200) }
        }
    }

    /// The 503 page says whether the app has no process or its processes crashed.
    func testCrashedAppPage() async throws {
        let (_, port) = try await startRouter(["down": [], "idle": []], crashed: ["down"])
        try await blocking {
            let crashed = try fetch(port: port, host: "down.localhost")
            XCTAssertEqual(crashed.status, 503)
            XCTAssertTrue(crashed.text.contains("crashed"), crashed.text)
            let idle = try fetch(port: port, host: "idle.localhost")
            XCTAssertTrue(idle.text.contains("no healthy web process"), idle.text)
        }
        let served = try await XCTUnwrap(router).served(count: 2)
        XCTAssertEqual(Set(served.compactMap { $0.error?.code }), ["H10", "H14"])
    }

    private static func upgradeRequest(_ path: String = "/ws", host: String = "shop.localhost") -> String {
        "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    }

    /// A WebSocket through the router: the 101 with the backend's accept key, the frame the backend
    /// sends right after it, echoes both ways (one larger than a read), and a clean close.
    func testWebSocketIsSpliced() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            let socket = try TestConnection(port: port)
            try socket.send(Self.upgradeRequest())
            let head = try socket.readHead()
            XCTAssertEqual(head.status, 101)
            XCTAssertEqual(head.headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            XCTAssertEqual(head.headers["upgrade"]?.lowercased(), "websocket")
            XCTAssertNotNil(head.headers["x-request-id"])
            let hello = try socket.readFrame()
            XCTAssertEqual(String(decoding: hello.payload, as: UTF8.self), "hello")
            for message in ["one", String(repeating: "z", count: 40_000)] {
                try socket.sendFrame(opcode: 1, Array(message.utf8))
                let echo = try socket.readFrame()
                XCTAssertEqual(echo.opcode, 1)
                XCTAssertEqual(String(decoding: echo.payload, as: UTF8.self), message)
            }
            try socket.sendFrame(opcode: 8, [0x03, 0xE8])
            let close = try socket.readFrame()
            XCTAssertEqual(close.opcode, 8)
            XCTAssertEqual(close.payload, [0x03, 0xE8])
            XCTAssertTrue(socket.isClosedByPeer())
        }
        XCTAssertEqual(web.webSocketCloses, [1000])
        let served = try await XCTUnwrap(router).served(count: 1)
        XCTAssertEqual(served.first?.status, 101)
    }

    /// A WebSocket to a process that leaves the table (a rollout) goes on through the drain period,
    /// then both sides get a 1001 close; an idle one is closed after the idle timeout.
    func testWebSocketDrainAndIdleTimeout() async throws {
        let web = try backend("shop")
        let next = try backend("shop2")
        var configuration = RouterConfiguration()
        configuration.upgradedDrain = .seconds(1)
        configuration.upgradedIdleTimeout = .seconds(2)
        let (table, port) = try await startRouter(["shop": [web.endpoint]], configuration: configuration)
        let nextEndpoint = next.endpoint
        try await blocking {
            let socket = try TestConnection(port: port)
            try socket.send(Self.upgradeRequest())
            XCTAssertEqual(try socket.readHead().status, 101)
            _ = try socket.readFrame()
            table.update(apps: ["shop": [nextEndpoint]], domains: [:])
            let left = Date()
            // Within the drain period it still works.
            try socket.sendFrame(opcode: 1, Array("still".utf8))
            XCTAssertEqual(String(decoding: try socket.readFrame().payload, as: UTF8.self), "still")
            let close = try socket.readFrame()
            XCTAssertEqual(close.opcode, 8)
            XCTAssertEqual(close.payload, [0x03, 0xE9], "1001 going away")
            XCTAssertGreaterThan(Date().timeIntervalSince(left), 0.9)
            XCTAssertTrue(socket.isClosedByPeer())

            let idle = try TestConnection(port: port)
            try idle.send(Self.upgradeRequest())
            XCTAssertEqual(try idle.readHead().status, 101)
            _ = try idle.readFrame()
            let opened = Date()
            let idleClose = try idle.readFrame()
            XCTAssertEqual(idleClose.opcode, 8)
            XCTAssertGreaterThan(Date().timeIntervalSince(opened), 1.9)
            XCTAssertTrue(idle.isClosedByPeer())
        }
        try await waitFor { web.webSocketCloses == [1001] && next.webSocketCloses == [1001] }
    }

    /// An upgrade to an app with no healthy process gets the 503 page and a close, not a hang.
    func testWebSocketToAppWithoutProcess() async throws {
        let (_, port) = try await startRouter(["idle": []])
        try await blocking {
            let socket = try TestConnection(port: port)
            try socket.send(Self.upgradeRequest(host: "idle.localhost"))
            let answer = try socket.readResponse()
            XCTAssertEqual(answer.status, 503)
            XCTAssertTrue(socket.isClosedByPeer())
        }
    }

    func testMetrics() {
        let now = ManagedAtomicSeconds()
        let metrics = RouterMetrics(clock: { now.value })
        func served(_ app: String, status: Int, ms: Int) -> ServedRequest {
            var request = ServedRequest(requestID: "r", app: app, endpoint: nil, method: "GET", uri: "/", status: status,
                                        duration: .milliseconds(ms))
            request.bytes = 10
            return request
        }
        for i in 0..<100 { metrics.record(served("shop", status: 200, ms: i < 90 ? 3 : 700)) }
        metrics.record(served("shop", status: 503, ms: 1))
        metrics.record(served("blog", status: 404, ms: 1))
        var summary = metrics.summary(app: "shop")
        XCTAssertEqual(summary.recent, ["2xx": 100, "5xx": 1])
        XCTAssertEqual(summary.total, 101)
        XCTAssertEqual(summary.bytes, 1010)
        XCTAssertEqual(try XCTUnwrap(summary.p50), 3.5, accuracy: 1.5)
        XCTAssertEqual(try XCTUnwrap(summary.p99), 900, accuracy: 400)
        let text = metrics.prometheus { $0 == "shop" }
        XCTAssertTrue(text.contains("kbuild_router_requests_total{app=\"shop\",status=\"2xx\"} 100\n"), text)
        XCTAssertTrue(text.contains("kbuild_router_request_duration_seconds_bucket{app=\"shop\",le=\"0.005\"} 91\n"), text)
        XCTAssertTrue(text.contains("kbuild_router_request_duration_seconds_count{app=\"shop\"} 101\n"), text)
        XCTAssertFalse(text.contains("blog"), "another app's figures are not shown")
        // Ten minutes later the window is empty; the totals stay.
        now.value += 600
        summary = metrics.summary(app: "shop")
        XCTAssertEqual(summary.recent, [:])
        XCTAssertNil(summary.p50)
        XCTAssertEqual(summary.total, 101)
    }

    func testLogLine() {
        var served = ServedRequest(requestID: "abc", app: "shop", endpoint: Endpoint(host: "10.0.0.2", port: 5000, process: "shop.web.2-9f3c"),
                                   method: "POST", uri: "/a\"b?q=1", status: 201, duration: .milliseconds(12))
        served.host = "shop.example.com"
        served.client = "203.0.113.9"
        served.connect = .microseconds(1500)
        served.service = .milliseconds(10)
        served.bytes = 42
        XCTAssertEqual(served.logLine, #"at=info method=POST path="/a\"b" host=shop.example.com request_id=abc fwd="203.0.113.9" dyno=web.2 connect=1ms service=10ms status=201 bytes=42 protocol=http"#)
        served.error = .connectionRefused
        served.host = "bad host"
        XCTAssertTrue(served.logLine.hasPrefix(#"at=error code=H21 desc="Backend connection refused" method=POST"#), served.logLine)
        XCTAssertTrue(served.logLine.contains("host=- "), served.logLine)
    }

    private func waitFor(_ condition: () -> Bool) async throws {
        for _ in 0..<100 {
            if condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTAssertTrue(condition())
    }
}

/// A clock for the metrics test.
final class ManagedAtomicSeconds: @unchecked Sendable {
    private let lock = NSLock()
    private var seconds: Int64 = 1_000_000
    var value: Int64 {
        get { lock.withLock { seconds } }
        set { lock.withLock { seconds = newValue } }
    }
}
