@testable import Router
import XCTest

final class RouteTableTests: XCTestCase {
    let web1 = Endpoint(host: "127.0.0.1", port: 5001, process: "shop.web.1")
    let web2 = Endpoint(host: "127.0.0.1", port: 5002, process: "shop.web.2")

    func testLookupTable() {
        let table = RouteTable()
        table.update(
            apps: ["shop": [web1, web2], "blog": [], "a-1": [web1]],
            domains: ["Shop.Example.COM": "shop", "blog.example.com": "blog", "gone.example.com": "gone"])
        let cases: [(String, Route)] = [
            ("shop.localhost", .app("shop", [web1, web2])),
            ("shop.localhost:8080", .app("shop", [web1, web2])),
            ("SHOP.LocalHost", .app("shop", [web1, web2])),
            ("shop.localhost.", .app("shop", [web1, web2])),
            ("a-1.localhost", .app("a-1", [web1])),
            ("shop.example.com", .app("shop", [web1, web2])),
            ("shop.example.com:443", .app("shop", [web1, web2])),
            ("blog.example.com", .noHealthyProcess(app: "blog")),
            ("blog.localhost", .noHealthyProcess(app: "blog")),
            ("gone.example.com", .noHealthyProcess(app: "gone")),
            ("nope.localhost", .unknownApp(host: "nope.localhost")),
            ("example.org", .unknownApp(host: "example.org")),
            ("localhost", .unknownApp(host: "localhost")),
            ("127.0.0.1:8080", .unknownApp(host: "127.0.0.1")),
            ("1shop.localhost", .badHost("1shop.localhost")),
            ("sh_op.localhost", .badHost("sh_op.localhost")),
            ("www.shop.localhost", .badHost("www.shop.localhost")),
            (String(repeating: "a", count: 64) + ".localhost", .badHost(String(repeating: "a", count: 64) + ".localhost")),
            ("shop.localhost:", .badHost("shop.localhost:")),
            ("shop.localhost:http", .badHost("shop.localhost:http")),
            ("shop .localhost", .badHost("shop .localhost")),
            ("shop.localhost/x", .badHost("shop.localhost/x")),
            ("", .badHost("")),
        ]
        for (host, expected) in cases {
            XCTAssertEqual(table.lookup(host: host), expected, "Host: \(host)")
        }
    }

    /// Every name `apps:create` takes is routable (63 bytes, a DNS label's most), and no other (found by fuzz/app-name).
    func testLongestValidAppName() {
        let name = "a" + String(repeating: "0", count: 62)
        let table = RouteTable()
        table.update(apps: [name: [web1]], domains: [:])
        XCTAssertEqual(table.lookup(host: "\(name).localhost"), .app(name, [web1]))
        XCTAssertEqual(table.lookup(host: "\(name)0.localhost"), .badHost("\(name)0.localhost"))
        XCTAssertEqual(table.lookup(host: "shop-.localhost"), .badHost("shop-.localhost"))
    }

    func testCustomSuffix() {
        let table = RouteTable(suffix: "apps.Example.net")
        table.update(apps: ["shop": [web1]], domains: [:])
        XCTAssertEqual(table.lookup(host: "shop.apps.example.net"), .app("shop", [web1]))
        XCTAssertEqual(table.lookup(host: "shop.localhost"), .unknownApp(host: "shop.localhost"))
    }

    func testUpdateReplacesWholeTable() {
        let table = RouteTable()
        table.update(apps: ["shop": [web1]], domains: ["shop.example.com": "shop"])
        table.update(apps: ["blog": [web2]], domains: [:])
        XCTAssertEqual(table.lookup(host: "shop.localhost"), .unknownApp(host: "shop.localhost"))
        XCTAssertEqual(table.lookup(host: "shop.example.com"), .unknownApp(host: "shop.example.com"))
        XCTAssertEqual(table.lookup(host: "blog.localhost"), .app("blog", [web2]))
    }
}

final class RequestIdentityTests: XCTestCase {
    func testRequestIDValidation() {
        XCTAssertTrue(RequestID.isValid("abc-123_x.y:z"))
        XCTAssertTrue(RequestID.isValid(String(repeating: "a", count: 128)))
        XCTAssertFalse(RequestID.isValid(String(repeating: "a", count: 129)))
        XCTAssertFalse(RequestID.isValid(""))
        XCTAssertFalse(RequestID.isValid("has space"))
        XCTAssertFalse(RequestID.isValid("semi;colon"))
    }

    func testGeneratedIDsAreValidAndDistinct() {
        var random = FastRandom()
        let ids = (0..<1000).map { _ in RequestID.generate(using: &random) }
        XCTAssertEqual(Set(ids).count, 1000)
        for id in ids.prefix(10) {
            XCTAssertEqual(id.count, 32)
            XCTAssertTrue(id.allSatisfy { $0.isHexDigit && !$0.isUppercase })
        }
        let traces = (0..<100).map { _ in TraceParent.generate(using: &random) }
        for trace in traces { XCTAssertTrue(TraceParent.isValid(trace), trace) }
        XCTAssertTrue(traces[0].hasPrefix("00-") && traces[0].hasSuffix("-01"))
        XCTAssertEqual(Set(traces).count, 100)
    }

    func testTraceparentValidation() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        XCTAssertTrue(TraceParent.isValid(valid))
        XCTAssertTrue(TraceParent.isValid("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra"))
        XCTAssertFalse(TraceParent.isValid(valid + "-extra"))  // version 00 has no extra fields
        XCTAssertFalse(TraceParent.isValid("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
        XCTAssertFalse(TraceParent.isValid("00-00000000000000000000000000000000-00f067aa0ba902b7-01"))
        XCTAssertFalse(TraceParent.isValid("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"))
        XCTAssertFalse(TraceParent.isValid("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"))
        XCTAssertFalse(TraceParent.isValid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"))
        XCTAssertFalse(TraceParent.isValid("garbage"))
    }

    func testServedRequestPathDropsQuery() {
        let served = ServedRequest(
            requestID: "x", app: nil, endpoint: nil, method: "GET", uri: "/a/b?c=d", status: 200, duration: .zero)
        XCTAssertEqual(served.path, "/a/b")
    }
}
