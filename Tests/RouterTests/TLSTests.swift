import Foundation
import Router
import XCTest

/// A self-signed certificate and key made by the openssl command, in files of a temporary directory.
struct TestCertificate {
    let directory: String
    var chainPath: String { directory + "/cert.pem" }
    var keyPath: String { directory + "/key.pem" }

    init(names: [String]) throws {
        directory = NSTemporaryDirectory() + "tls-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let made = try runCommand("/usr/bin/openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                                "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem", "-days", "30",
                                                "-subj", "/CN=\(names[0])", "-addext", "subjectAltName=" + names.map { "DNS:\($0)" }.joined(separator: ",")])
        guard made.status == 0 else { throw TestError("openssl failed: \(made.output)") }
    }

    var served: ServedCertificate {
        get throws {
            try ServedCertificate(id: UUID().uuidString, chainPEM: String(contentsOfFile: chainPath, encoding: .utf8),
                                  keyPEM: String(contentsOfFile: keyPath, encoding: .utf8))
        }
    }
}

/// Runs a command to its end: its status and its output (stdout and stderr together).
func runCommand(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}

/// The router's HTTPS listener, driven by curl and openssl: SNI, HTTP/2 and HTTP/1.1 by ALPN, and the
/// handshakes it refuses.
final class TLSTests: XCTestCase {
    var backends: [TestBackend] = []
    var router: RunningRouter?

    override func tearDown() async throws {
        try await router?.stop()
        router = nil
        for backend in backends { backend.stop() }
        backends = []
    }

    func testSNIAlpnAndRefusedHandshakes() async throws {
        let web = try TestBackend(name: "shop")
        backends.append(web)
        let shopCert = try TestCertificate(names: ["shop.example.com", "shop.localhost"])
        let table = RouteTable()
        table.update(apps: ["shop": [web.endpoint], "blog": [web.endpoint]], domains: ["shop.example.com": "shop"],
                     certificates: ["shop.example.com": try shopCert.served, "SHOP.localhost.": try shopCert.served])
        let router = try await RunningRouter.start(table: table, https: true)
        self.router = router
        let port = router.httpsPort
        @Sendable func curl(_ host: String, _ extra: [String] = [], path: String = "/") throws -> (status: Int32, output: String) {
            try runCommand("/usr/bin/curl", ["-sS", "--max-time", "10", "--cacert", shopCert.chainPath, "--resolve", "\(host):\(port):127.0.0.1",
                                      "-w", "\n%{http_version} %{http_code}"] + extra + ["https://\(host):\(port)\(path)"])
        }
        try await blocking {
            // HTTP/2 by ALPN, two requests on one connection; the backend hears HTTP/1.1 with X-Forwarded-Proto https.
            let h2 = try curl("shop.example.com", ["--http2"], path: "/a")
            XCTAssertEqual(h2.status, 0, h2.output)
            XCTAssertTrue(h2.output.hasSuffix("\n2 200"), h2.output)
            XCTAssertTrue(h2.output.contains(#""x-forwarded-proto": "https""#), h2.output)
            XCTAssertTrue(h2.output.contains(#""path": "/a""#), h2.output)
            let twice = try runCommand("/usr/bin/curl", ["-sS", "--http2", "--cacert", shopCert.chainPath, "--resolve", "shop.example.com:\(port):127.0.0.1",
                                                  "-w", "%{num_connects} ", "https://shop.example.com:\(port)/1", "https://shop.example.com:\(port)/2"])
            XCTAssertTrue(twice.output.contains("1 ") && twice.output.contains("0 "), "the second request reuses the connection: \(twice.output)")
            // POST over HTTP/2 with a body.
            let post = try curl("shop.example.com", ["--http2", "--data-binary", "hello over h2"], path: "/up")
            XCTAssertTrue(post.output.contains(#""bodyBytes": 13"#), post.output)
            // HTTP/1.1 over TLS, by the same SNI rules; APP.localhost has the certificate too.
            let h1 = try curl("shop.localhost", ["--http1.1"])
            XCTAssertTrue(h1.output.hasSuffix("\n1.1 200"), h1.output)

            // A name no certificate is for, and no name at all: the handshake is refused.
            let unknown = try curl("blog.localhost", ["-k"])
            XCTAssertEqual(unknown.status, 35, "handshake refused: \(unknown.output)")
            let noSNI = try runCommand("/usr/bin/curl", ["-sS", "-k", "--max-time", "10", "https://127.0.0.1:\(port)/"])
            XCTAssertEqual(noSNI.status, 35, "no SNI: \(noSNI.output)")
            // Garbage instead of a ClientHello: the connection is closed, nothing else is disturbed.
            let garbage = try TestConnection(port: port)
            try garbage.send("GET / HTTP/1.1\r\nHost: shop.localhost\r\n\r\n")
            XCTAssertTrue(garbage.isClosedByPeer())
            XCTAssertEqual(try curl("shop.example.com").status, 0)
        }
        // A new certificate reaches new handshakes with the next table.
        let renewed = try TestCertificate(names: ["shop.example.com"])
        table.update(apps: ["shop": [web.endpoint]], domains: ["shop.example.com": "shop"], certificates: ["shop.example.com": try renewed.served])
        try await blocking {
            let old = try curl("shop.example.com")
            XCTAssertNotEqual(old.status, 0, "the old certificate is no longer served")
            let fresh = try runCommand("/usr/bin/curl", ["-sS", "--cacert", renewed.chainPath, "--resolve", "shop.example.com:\(port):127.0.0.1",
                                                  "https://shop.example.com:\(port)/"])
            XCTAssertEqual(fresh.status, 0, fresh.output)
        }
    }
}
