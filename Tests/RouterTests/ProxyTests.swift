import Foundation
import NIOCore
import Router
import XCTest

/// The router in front of real python3 backends, over real sockets.
final class ProxyTests: XCTestCase {
    var backends: [TestBackend] = []
    var router: RunningRouter?

    override func tearDown() async throws {
        try await router?.stop()
        router = nil
        for backend in backends { backend.stop() }
        backends = []
    }

    private func backend(_ name: String, idleTimeout: Double? = nil) throws -> TestBackend {
        let backend = try TestBackend(name: name, idleTimeout: idleTimeout)
        backends.append(backend)
        return backend
    }

    private func startRouter(
        _ apps: [String: [Endpoint]], domains: [String: String] = [:],
        configuration: RouterConfiguration = RouterConfiguration()
    ) async throws -> (RouteTable, Int) {
        let table = RouteTable()
        table.update(apps: apps, domains: domains)
        let router = try await RunningRouter.start(table: table, configuration: configuration)
        self.router = router
        return (table, router.port)
    }

    func testGetAndPostReachTheBackend() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]], domains: ["shop.example.com": "shop"])
        try await blocking {
            let get = try fetch(port: port, "GET", "/items?page=2", host: "shop.localhost:\(port)")
            XCTAssertEqual(get.status, 200)
            let answer = try get.json()
            XCTAssertEqual(answer["backend"] as? String, "shop")
            XCTAssertEqual(answer["path"] as? String, "/items?page=2")

            let byDomain = try fetch(port: port, "GET", "/", host: "Shop.Example.com")
            XCTAssertEqual(try byDomain.json()["backend"] as? String, "shop")

            let body = Array("hello, backend".utf8)
            let post = try fetch(port: port, "POST", "/upload", host: "shop.localhost", body: body)
            XCTAssertEqual(post.status, 200)
            let posted = try post.json()
            XCTAssertEqual(posted["method"] as? String, "POST")
            XCTAssertEqual(posted["bodyBytes"] as? Int, body.count)
            XCTAssertEqual(try post.backendHeaders()["content-length"], String(body.count))

            let chunkedResponse = try fetch(port: port, "GET", "/chunked", host: "shop.localhost")
            XCTAssertEqual(chunkedResponse.status, 200)
            XCTAssertEqual(try chunkedResponse.json()["path"] as? String, "/chunked")
        }
    }

    func testChunkedRequestBodyIsStreamed() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            let connection = try TestConnection(port: port)
            try connection.send("POST /chunked-upload HTTP/1.1\r\nHost: shop.localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
            var total = 0
            for size in [5, 1000, 70000, 3] {
                try connection.send("\(String(size, radix: 16))\r\n")
                try connection.send([UInt8](repeating: 0x61, count: size) + [13, 10])
                total += size
            }
            try connection.send("0\r\n\r\n")
            let response = try connection.readResponse()
            XCTAssertEqual(response.status, 200)
            XCTAssertEqual(try response.json()["bodyBytes"] as? Int, total)
            XCTAssertEqual(try response.backendHeaders()["transfer-encoding"], "chunked")
        }
    }

    func testKeepAliveReusesClientAndBackendConnections() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            let connection = try TestConnection(port: port)
            var connectionsSeen = 0
            for index in 0..<50 {
                let response = try connection.request("GET", "/\(index)", host: "shop.localhost")
                XCTAssertEqual(response.status, 200)
                XCTAssertNil(response.headers["connection"])
                connectionsSeen = try response.json()["connections"] as? Int ?? 0
            }
            XCTAssertEqual(connectionsSeen, 1, "50 requests over one client connection used one backend connection")

            // HTTP/1.0 without keep-alive gets its answer and a close.
            let old = try TestConnection(port: port)
            let response = try old.request("GET", "/old", host: "shop.localhost", version: "HTTP/1.0")
            XCTAssertEqual(response.status, 200)
            XCTAssertTrue(old.isClosedByPeer())
        }
    }

    func testPipelinedRequestsAnswerInOrder() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            let connection = try TestConnection(port: port)
            let requests = (0..<5).map { "GET /p\($0) HTTP/1.1\r\nHost: shop.localhost\r\n\r\n" }.joined()
            try connection.send(requests)
            for index in 0..<5 {
                let response = try connection.readResponse()
                XCTAssertEqual(try response.json()["path"] as? String, "/p\(index)")
            }
        }
    }

    func testRequestIDAndForwardingHeaders() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            let generated = try fetch(port: port, "GET", "/", host: "shop.localhost:\(port)")
            let id = try XCTUnwrap(generated.headers["x-request-id"])
            XCTAssertEqual(id.count, 32)
            let seen = try generated.backendHeaders()
            XCTAssertEqual(seen["x-request-id"], id)
            XCTAssertEqual(seen["x-forwarded-for"], "127.0.0.1")
            XCTAssertEqual(seen["x-forwarded-proto"], "http")
            XCTAssertEqual(seen["x-forwarded-port"], String(port))
            XCTAssertEqual(seen["x-forwarded-host"], "shop.localhost:\(port)")
            XCTAssertNil(seen["connection"].flatMap { $0 == "close" ? $0 : nil })
            let trace = try XCTUnwrap(seen["traceparent"])
            XCTAssertTrue(trace.hasPrefix("00-") && trace.hasSuffix("-01") && trace.count == 55, trace)

            let another = try fetch(port: port, "GET", "/", host: "shop.localhost")
            XCTAssertNotEqual(another.headers["x-request-id"], id)

            let clientTrace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            let kept = try fetch(
                port: port, "GET", "/", host: "shop.localhost",
                headers: [
                    ("X-Request-Id", "client-id.42"), ("traceparent", clientTrace),
                    ("X-Forwarded-For", "10.1.2.3"), ("X-Forwarded-Proto", "https"),
                    ("Keep-Alive", "timeout=5"), ("Connection", "keep-alive, X-Secret"), ("X-Secret", "hop"),
                ])
            XCTAssertEqual(kept.headers["x-request-id"], "client-id.42")
            let keptSeen = try kept.backendHeaders()
            XCTAssertEqual(keptSeen["x-request-id"], "client-id.42")
            XCTAssertEqual(keptSeen["traceparent"], clientTrace)
            XCTAssertEqual(keptSeen["x-forwarded-for"], "10.1.2.3, 127.0.0.1")
            XCTAssertEqual(keptSeen["x-forwarded-proto"], "http")
            XCTAssertNil(keptSeen["keep-alive"])
            XCTAssertNil(keptSeen["x-secret"])

            let insane = try fetch(
                port: port, "GET", "/", host: "shop.localhost",
                headers: [("X-Request-Id", "bad id!"), ("traceparent", "00-zz-zz-01")])
            XCTAssertNotEqual(insane.headers["x-request-id"], "bad id!")
            XCTAssertEqual(insane.headers["x-request-id"]?.count, 32)
            XCTAssertNotEqual(try insane.backendHeaders()["traceparent"], "00-zz-zz-01")
        }
        let served = try await XCTUnwrap(router).served(count: 4)
        XCTAssertEqual(served.count, 4)
        XCTAssertEqual(served.first?.app, "shop")
        XCTAssertEqual(served.first?.endpoint, web.endpoint)
        XCTAssertEqual(served.first?.status, 200)
    }

    func testRouterPages() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint], "idle": []])
        try await blocking {
            let unavailable = try fetch(port: port, "GET", "/", host: "idle.localhost")
            XCTAssertEqual(unavailable.status, 503)
            XCTAssertNotNil(unavailable.headers["retry-after"])
            XCTAssertTrue(unavailable.text.contains("no healthy web process"), unavailable.text)
            XCTAssertEqual(unavailable.headers["x-request-id"]?.count, 32)

            let unknown = try fetch(port: port, "GET", "/", host: "nope.localhost")
            XCTAssertEqual(unknown.status, 404)
            XCTAssertTrue(unknown.text.contains("no app is served at nope.localhost"), unknown.text)

            let bad = try fetch(port: port, "GET", "/", host: "Bad_Name.localhost")
            XCTAssertEqual(bad.status, 400)

            // The pages keep the connection alive, and a body sent along is skipped.
            let connection = try TestConnection(port: port)
            let missing = try connection.request("POST", "/", host: nil, body: Array("ignored".utf8), version: "HTTP/1.1")
            XCTAssertEqual(missing.status, 400)
            let after = try connection.request("GET", "/", host: "shop.localhost")
            XCTAssertEqual(after.status, 200)
        }
        let served = try await XCTUnwrap(router).served(count: 5)
        XCTAssertEqual(served.map(\.status).sorted(), [200, 400, 400, 404, 503])
    }

    /// A request to an unknown host whose body trickles in is answered within
    /// the header timeout, not held forever; a body framed with a transfer
    /// coding other than chunked is refused with 400 and never reaches a backend.
    func testTrickledBodiesAndStrangeFramingAreNotHeldOrForwarded() async throws {
        let web = try backend("shop")
        var configuration = RouterConfiguration()
        configuration.headerReadTimeout = .seconds(1)
        let (_, port) = try await startRouter(["shop": [web.endpoint]], configuration: configuration)
        try await blocking {
            let trickle = try TestConnection(port: port, timeoutSeconds: 10)
            try trickle.send("POST / HTTP/1.1\r\nHost: nope.localhost\r\nContent-Length: 1000\r\n\r\nab")
            let started = Date()
            let answered = try trickle.readResponse(method: "POST")
            XCTAssertEqual(answered.status, 404)
            XCTAssertLessThan(Date().timeIntervalSince(started), 5, "answered within the header timeout")

            for coding in ["xchunked", "gzip, chunked", "chunked, identity"] {
                let smuggle = try TestConnection(port: port)
                try smuggle.send("POST / HTTP/1.1\r\nHost: shop.localhost\r\nTransfer-Encoding: \(coding)\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                let refused = try smuggle.readResponse(method: "POST")
                XCTAssertEqual(refused.status, 400, coding)
                XCTAssertTrue(smuggle.isClosedByPeer(), "closed after the refusal (\(coding))")
            }
        }
        // (NIO's own parser refuses some framings before the router sees a head: those are not logged.)
        let served = try await XCTUnwrap(router).served(count: 3)
        XCTAssertTrue(served.allSatisfy { [400, 404].contains($0.status) }, "\(served)")
        XCTAssertTrue(served.allSatisfy { $0.endpoint == nil }, "nothing reached the backend: \(served)")
    }

    func testDeadEndpointIsRetriedOnALiveOne() async throws {
        let web = try backend("shop")
        let dead = Endpoint(host: "127.0.0.1", port: try unusedPort(), process: "shop.web.dead")
        let (_, port) = try await startRouter(["shop": [dead, web.endpoint]])
        try await blocking {
            for index in 0..<20 {
                let response = try fetch(port: port, "POST", "/\(index)", host: "shop.localhost", body: [1, 2, 3])
                XCTAssertEqual(response.status, 200, "request \(index)")
                XCTAssertEqual(try response.json()["bodyBytes"] as? Int, 3)
            }
        }
    }

    func testAllEndpointsDeadGives502() async throws {
        let dead = Endpoint(host: "127.0.0.1", port: try unusedPort(), process: "shop.web.dead")
        let (_, port) = try await startRouter(["shop": [dead]])
        try await blocking {
            let response = try fetch(port: port, "GET", "/", host: "shop.localhost")
            XCTAssertEqual(response.status, 502)
        }
    }

    func testPooledConnectionClosedByBackendIsReplaced() async throws {
        let web = try backend("shop", idleTimeout: 0.3)
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            let connection = try TestConnection(port: port)
            for index in 0..<3 {
                let response = try connection.request("POST", "/\(index)", host: "shop.localhost", body: [7])
                XCTAssertEqual(response.status, 200)
                XCTAssertEqual(try response.json()["connections"] as? Int, index + 1)
                usleep(600_000)  // the backend closes its idle connection meanwhile
            }
        }
    }

    func testSlowBackendGives504() async throws {
        let web = try backend("shop")
        var configuration = RouterConfiguration()
        configuration.requestTimeout = .milliseconds(400)
        let (_, port) = try await startRouter(["shop": [web.endpoint]], configuration: configuration)
        try await blocking {
            let started = Date()
            let response = try fetch(port: port, "GET", "/slow?ms=3000", host: "shop.localhost")
            XCTAssertEqual(response.status, 504)
            XCTAssertLessThan(Date().timeIntervalSince(started), 2.5)
            XCTAssertEqual(try fetch(port: port, "GET", "/slow?ms=10", host: "shop.localhost").status, 200)
        }
    }

    func testTableUpdateMovesTraffic() async throws {
        let old = try backend("old")
        let new = try backend("new")
        let (table, port) = try await startRouter(["shop": [old.endpoint]])
        let newEndpoint = new.endpoint
        let counts = try await withThrowingTaskGroup(of: [String: Int].self) { group in
            group.addTask {
                try await blocking {
                    var counts: [String: Int] = [:]
                    let connection = try TestConnection(port: port)
                    for index in 0..<300 {
                        let response = try connection.request("GET", "/\(index)", host: "shop.localhost")
                        XCTAssertEqual(response.status, 200)
                        let name = try response.json()["backend"] as? String ?? "?"
                        counts[name, default: 0] += 1
                        if index == 100 { table.update(apps: ["shop": [newEndpoint]], domains: [:]) }
                        if index > 100 { XCTAssertEqual(name, "new", "request \(index) after the update") }
                    }
                    return counts
                }
            }
            return try await group.next()!
        }
        XCTAssertEqual(counts["old"], 101)
        XCTAssertEqual(counts["new"], 199)
        // Both endpoints: the new one gets traffic, the old one keeps none.
        table.update(apps: ["shop": [old.endpoint, new.endpoint]], domains: [:])
        try await blocking {
            var names = Set<String>()
            for _ in 0..<10 { names.insert(try fetch(port: port, host: "shop.localhost").json()["backend"] as? String ?? "") }
            XCTAssertEqual(names, ["old", "new"])
        }
    }

    func testLargeStreamedResponseAndUpload() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        try await blocking {
            let size = 50 * 1024 * 1024
            let connection = try TestConnection(port: port, timeoutSeconds: 60)
            try connection.send("GET /big?n=\(size) HTTP/1.1\r\nHost: shop.localhost\r\n\r\n")
            var offset = 0
            var mismatches = 0
            let response = try connection.readResponse(keepBody: false) { piece in
                for byte in piece {
                    if byte != UInt8(offset % 251) { mismatches += 1 }
                    offset += 1
                }
            }
            XCTAssertEqual(response.status, 200)
            XCTAssertEqual(offset, size)
            XCTAssertEqual(mismatches, 0)

            let upload = 20 * 1024 * 1024
            try connection.send("POST /up HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: \(upload)\r\n\r\n")
            let block = [UInt8](repeating: 0x5a, count: 1024 * 1024)
            for _ in 0..<20 { try connection.send(block) }
            let uploaded = try connection.readResponse()
            XCTAssertEqual(uploaded.status, 200)
            XCTAssertEqual(try uploaded.json()["bodyBytes"] as? Int, upload)
        }
    }

    func testGracefulShutdownFinishesInFlightRequest() async throws {
        let web = try backend("shop")
        let (_, port) = try await startRouter(["shop": [web.endpoint]])
        let router = try XCTUnwrap(self.router)
        let idle = try TestConnection(port: port)
        XCTAssertEqual(try idle.request("GET", "/", host: "shop.localhost").status, 200)
        let inFlight = Task { try await blocking { try fetch(port: port, "GET", "/slow?ms=800", host: "shop.localhost") } }
        try await Task.sleep(for: .milliseconds(300))
        try await router.stop()
        self.router = nil
        let response = try await withTimeout(seconds: 10, "in-flight request") { try await inFlight.value }
        XCTAssertEqual(response.status, 200)
        XCTAssertTrue(idle.isClosedByPeer())
        XCTAssertThrowsError(try TestConnection(port: port), "the listener is closed")
    }
}
