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
                                                         "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_version} %{num_connects}\n",
                                                         "https://shop.example.com:\(port)/1", "https://shop.example.com:\(port)/2"])
            XCTAssertEqual(twice.output, "2 1\n2 0\n", "the second request reuses the connection")
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

    /// A connection that never finishes its handshake is closed at the header timeout; an HTTP/2 connection
    /// with no stream left, at the idle timeout; an address over its limit is closed before any handshake.
    func testHandshakeDeadlineIdleHTTP2AndConnectionLimit() async throws {
        let web = try TestBackend(name: "shop")
        backends.append(web)
        let certificate = try TestCertificate(names: ["shop.localhost"])
        let table = RouteTable()
        table.update(apps: ["shop": [web.endpoint]], domains: [:], certificates: ["shop.localhost": try certificate.served])
        var configuration = RouterConfiguration()
        configuration.headerReadTimeout = .seconds(1)
        configuration.clientIdleTimeout = .seconds(2)
        configuration.maxConnectionsPerClient = 2
        let router = try await RunningRouter.start(table: table, configuration: configuration, https: true)
        self.router = router
        let port = router.httpsPort
        try await blocking {
            let silent = try TestConnection(port: port, timeoutSeconds: 10)
            let opened = Date()
            XCTAssertTrue(silent.isClosedByPeer())
            XCTAssertLessThan(Date().timeIntervalSince(opened), 4, "closed at the handshake deadline")
            // An HTTP/2 connection (the preface and its SETTINGS) that opens no stream: closed at the idle timeout.
            let script = """
                import socket, ssl, time
                ctx = ssl.create_default_context(cafile="\(certificate.chainPath)")
                ctx.set_alpn_protocols(["h2"])
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", \(port))), server_hostname="shop.localhost")
                assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
                s.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
                start = time.monotonic()
                s.settimeout(10)
                while s.recv(4096):
                    pass
                print(round(time.monotonic() - start))
                """
            let idle = try runCommand("/usr/bin/python3", ["-c", script])
            XCTAssertEqual(idle.status, 0, idle.output)
            let seconds = Int(idle.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
            XCTAssertTrue((2...4).contains(seconds), "an HTTP/2 connection without streams closed after the idle timeout: \(idle.output)")
            // Two held, the third closed at once.
            let held = try (0..<2).map { _ in try TestConnection(port: port, timeoutSeconds: 5) }
            // Each event loop accepts from its own socket, in no set order: the two are accepted before the third comes.
            Thread.sleep(forTimeInterval: 0.3)
            let third = try TestConnection(port: port, timeoutSeconds: 5)
            let refused = Date()
            XCTAssertTrue(third.isClosedByPeer())
            XCTAssertLessThan(Date().timeIntervalSince(refused), 0.9, "closed before the handshake deadline")
            withExtendedLifetime(held) {}
        }
    }
}
