import Foundation
import KbuildServer
import XCTest

/// The router as `kbuild up` runs it, with pushed apps: router lines in `kbuild logs APP`, an app's
/// request timeout and body limit (`router:settings`), `/metrics` per token, and a WebSocket.
final class RouterEndToEndTests: XCTestCase {
    func testRouterLogsSettingsMetricsAndWebSockets() throws {
        let data = try makeData("routere2e")
        let routerPort = freePort()
        let server = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        let shop = try makeApp("shop", data: data, files: [
            // busybox httpd runs www/cgi-bin/* as CGI: one that answers after 4 s.
            "www/cgi-bin/slow": "#!/bin/sh\nsleep 4\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow\\n'\n",
        ])
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: shop).status, 0)
        let blog = try makeApp("blog", data: data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: blog).status, 0)
        try waitUntil("shop and blog serve") {
            routed(routerPort, host: "shop.localhost").status == 200 && routed(routerPort, host: "blog.localhost").status == 200
        }

        // Router lines in the app's logs, as the `router` source, in Heroku's form.
        let ok = routed(routerPort, host: "shop.localhost", path: "/index.html")
        let id = try XCTUnwrap(ok.headers["x-request-id"])
        XCTAssertEqual(routed(routerPort, host: "shop.localhost", path: "/missing").status, 404)
        try waitUntil("router lines in shop's logs", timeout: 10) {
            let logs = try kbuild(["logs", "shop", "--ps", "router"], dataDir: data).stdout
            return logs.contains("request_id=\(id)") && logs.contains(#"path="/missing""#)
        }
        let routerLines = try kbuild(["logs", "shop", "--ps", "router"], dataDir: data).stdout
        let line = try XCTUnwrap(routerLines.split(separator: "\n").first { $0.contains("request_id=\(id)") })
        for field in [" router ", "at=info method=GET path=\"/index.html\" host=shop.localhost request_id=\(id) fwd=\"127.0.0.1\" dyno=web.1 connect=",
                      " service=", " status=200 bytes=", " protocol=http"] {
            XCTAssertTrue(line.contains(field), "\(field) in \(line)")
        }
        XCTAssertFalse(routerLines.contains("serving on"), "--ps router shows the router's lines only")
        let all = try kbuild(["logs", "shop"], dataDir: data).stdout
        XCTAssertTrue(all.contains("serving on") && all.contains("request_id=\(id)"), "the app's own lines and the router's, merged")
        XCTAssertFalse(try kbuild(["logs", "blog"], dataDir: data).stdout.contains("shop.localhost"), "another app's logs have none of shop's lines")

        // The request timeout of one app: 504 with the request id after 2 s, logged as H12; the other keeps 30 s.
        XCTAssertTrue(try kbuild(["router:settings", "shop"], dataDir: data).stdout.contains("request timeout  default"))
        let set = try kbuild(["router:settings", "shop", "--request-timeout", "2"], dataDir: data)
        XCTAssertEqual(set.status, 0, set.stderr)
        XCTAssertTrue(set.stdout.contains("request timeout  2 s"), set.stdout)
        try waitUntil("the router has the timeout", timeout: 10) {
            let started = Date()
            let slow = routed(routerPort, host: "shop.localhost", path: "/cgi-bin/slow")
            return slow.status == 504 && Date().timeIntervalSince(started) < 3.5 && slow.body.contains(slow.headers["x-request-id"] ?? "-")
        }
        try waitUntil("H12 in shop's logs", timeout: 10) {
            try kbuild(["logs", "shop", "--ps", "router"], dataDir: data).stdout.contains(#"at=error code=H12 desc="Request timeout" method=GET path="/cgi-bin/slow""#)
        }
        // Bad input: each refused with the reason, nothing changed.
        for (args, message) in [(["--request-timeout", "0"], "invalid request timeout 0: 1 to 3600 seconds"),
                                (["--request-timeout", "soon"], "--request-timeout must be whole seconds"),
                                (["--body-limit", "12"], "invalid body limit 12: 1K to 10G"),
                                (["--body-limit", "lots"], "--body-limit")] {
            let r = try kbuild(["router:settings", "shop"] + args, dataDir: data)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        XCTAssertTrue(try kbuild(["router:settings", "nosuchapp"], dataDir: data).stderr.contains("nosuchapp"))
        XCTAssertTrue(try kbuild(["router:settings", "shop"], dataDir: data).stdout.contains("request timeout  2 s"))

        // A body limit: 413 past it.
        XCTAssertEqual(try kbuild(["router:settings", "shop", "--body-limit", "1K", "--request-timeout", "default"], dataDir: data).status, 0)
        let body = try tempDir(self, "body") + "/body"
        try writeFile(body, String(repeating: "x", count: 5000))
        try waitUntil("413 past the limit", timeout: 10) {
            let r = try sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: shop.localhost", "--data-binary", "@\(body)",
                                             "http://127.0.0.1:\(routerPort)/index.html"])
            return r.stdout == "413"
        }

        // /metrics: the admin sees every app; an app token its own only; no token, nothing.
        let admin = try sh("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer \(server.token)", server.url + "/metrics"]).stdout
        XCTAssertTrue(admin.contains(#"kbuild_router_requests_total{app="shop",status="2xx"}"#), admin)
        XCTAssertTrue(admin.contains(#"kbuild_router_requests_total{app="shop",status="5xx"}"#), admin)
        XCTAssertTrue(admin.contains(#"kbuild_router_request_duration_seconds_count{app="blog"}"#), admin)
        let made = try kbuild(["tokens:create", "shop-dev", "--app", "shop"], dataDir: data)
        XCTAssertEqual(made.status, 0, made.stderr)
        let own = try sh("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer \(trimmed(made.stdout))", server.url + "/metrics"]).stdout
        XCTAssertTrue(own.contains(#"app="shop""#), own)
        XCTAssertFalse(own.contains(#"app="blog""#), "an app token sees its own apps' series only")
        XCTAssertEqual(try sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", server.url + "/metrics"]).stdout, "401")
        let traffic = try sh("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer \(trimmed(made.stdout))", server.url + "/api/v1/apps/shop/metrics"]).stdout
        let summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(traffic.utf8)) as? [String: Any], traffic)
        XCTAssertGreaterThan(summary["total"] as? Int ?? 0, 3)
        XCTAssertNotNil(summary["p99"] as? Double)
        let page = try sh("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer \(server.token)", server.url + "/apps/shop"]).stdout
        XCTAssertTrue(page.contains("Traffic") && page.contains("p99"), "the dashboard's app page shows the router's figures")

        // A WebSocket to a pushed app (a shell server behind busybox nc): the 101, a frame each way.
        let chat = try makeApp("chat", data: data, serve: "#!/bin/sh\nexec busybox nc -ll -p \"$PORT\" -e ./ws.sh\n", files: ["ws.sh": """
            #!/bin/sh
            key=""
            while IFS= read -r line; do
                line=$(printf '%s' "$line" | tr -d '\\r')
                [ -z "$line" ] && break
                case "$line" in [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=$(printf '%s' "${line#*:}" | tr -d ' ') ;; esac
            done
            hex=$(printf '%s' "${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | sha1sum | cut -d' ' -f1)
            accept=$(printf "$(printf '%s' "$hex" | sed 's/../\\\\x&/g')" | base64)
            printf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: %s\\r\\n\\r\\n' "$accept"
            printf '\\201\\005hello'
            dd bs=10 count=1 of=/dev/null 2>/dev/null
            printf '\\201\\003got'
            sleep 1

            """])
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: chat).status, 0)
        try waitUntil("chat is healthy") { healthy(try ps("chat", data), count: 1) }
        let client = """
            import socket, sys
            s = socket.create_connection(("127.0.0.1", \(routerPort)), timeout=10)
            s.sendall(b"GET /ws HTTP/1.1\\r\\nHost: chat.localhost\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\n"
                      b"Sec-WebSocket-Version: 13\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n\\r\\n")
            data = b""
            while b"\\r\\n\\r\\n" not in data:
                data += s.recv(4096)
            head, rest = data.split(b"\\r\\n\\r\\n", 1)
            print(head.decode().split("\\r\\n")[0])
            print([l for l in head.decode().split("\\r\\n") if l.lower().startswith("sec-websocket-accept")][0])
            while len(rest) < 7:
                rest += s.recv(4096)
            print(rest[:7])
            mask = b"\\x01\\x02\\x03\\x04"
            s.sendall(b"\\x81\\x84" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"ping")))
            rest = rest[7:]
            while len(rest) < 5:
                rest += s.recv(4096)
            print(rest[:5])
            """
        try waitUntil("a WebSocket through the router", timeout: 20) {
            let r = try sh("/usr/bin/python3", ["-c", client])
            return r.stdout == "HTTP/1.1 101 Switching Protocols\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\nb'\\x81\\x05hello'\nb'\\x81\\x03got'\n"
        }
        try waitUntil("the upgrade in chat's router lines", timeout: 10) {
            try kbuild(["logs", "chat", "--ps", "router"], dataDir: data).stdout.contains(#"path="/ws" host=chat.localhost"#)
        }
        XCTAssertTrue(try kbuild(["logs", "chat", "--ps", "router"], dataDir: data).stdout.contains("status=101"))
    }

    /// HTTPS through `kbuild up`: certs:generate, certs:add with a certificate from openssl, the checks
    /// that refuse a bad one, and SNI serving the app's domain with its certificate.
    func testCertificatesAndHTTPS() throws {
        let data = try makeData("routertls")
        let routerPort = freePort(), httpsPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort), "--https-port", String(httpsPort)])
        let shop = try makeApp("shop", data: data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: shop).status, 0)
        XCTAssertEqual(try kbuild(["apps:create", "other", "--stack", "busybox"], dataDir: data).status, 0)
        try waitUntil("shop serves") { routed(routerPort, host: "shop.localhost").status == 200 }
        XCTAssertTrue(try kbuild(["certs", "shop"], dataDir: data).stdout.contains("shop has no certificates"))

        // A self-signed certificate for trying it: shop.localhost over HTTPS, HTTP/2.
        let generated = try kbuild(["certs:generate", "shop"], dataDir: data)
        XCTAssertEqual(generated.status, 0, generated.stderr)
        XCTAssertTrue(generated.stdout.contains("shop.localhost") && generated.stdout.contains("self-signed"), generated.stdout)
        func https(_ host: String, _ extra: [String]) throws -> Result {
            try sh("/usr/bin/curl", ["-sS", "--max-time", "10", "--resolve", "\(host):\(httpsPort):127.0.0.1", "-w", "\n%{http_version} %{http_code}"]
                   + extra + ["https://\(host):\(httpsPort)/index.html"])
        }
        try waitUntil("shop.localhost over HTTPS", timeout: 10) {
            let r = try https("shop.localhost", ["-k", "--http2"])
            return r.status == 0 && r.stdout.hasPrefix("hello from shop") && r.stdout.hasSuffix("\n2 200")
        }

        // A certificate from elsewhere (openssl here) for a custom domain: refused until the domain is the app's.
        let dir = try tempDir(self, "certs")
        let made = try sh("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
                                               "-days", "30", "-subj", "/CN=www.shop.test", "-addext", "subjectAltName=DNS:www.shop.test"])
        XCTAssertEqual(made.status, 0, made.stderr)
        let early = try kbuild(["certs:add", "shop", dir + "/cert.pem", dir + "/key.pem"], dataDir: data)
        XCTAssertNotEqual(early.status, 0)
        XCTAssertTrue(early.stderr.contains("the certificate is for www.shop.test, none of shop's hosts"), early.stderr)
        XCTAssertEqual(try kbuild(["domains:add", "shop", "www.shop.test"], dataDir: data).status, 0)
        let added = try kbuild(["certs:add", "shop", dir + "/cert.pem", dir + "/key.pem"], dataDir: data)
        XCTAssertEqual(added.status, 0, added.stderr)
        XCTAssertTrue(added.stdout.contains("serves www.shop.test"), added.stdout)
        try waitUntil("www.shop.test over HTTPS with its certificate", timeout: 10) {
            let r = try https("www.shop.test", ["--cacert", dir + "/cert.pem", "--http1.1"])
            return r.status == 0 && r.stdout.hasPrefix("hello from shop") && r.stdout.hasSuffix("\n1.1 200")
        }
        // The key never comes back: not in certs, not in --json.
        let listed = try kbuild(["certs", "shop", "--json"], dataDir: data).stdout
        let key = try String(contentsOfFile: dir + "/key.pem", encoding: .utf8)
        XCTAssertFalse(listed.contains("PRIVATE KEY") || listed.contains(String(key.split(separator: "\n")[1])), "no key in certs output")

        // Bad certificates and keys, each refused with the reason.
        let expired = try AppCertificate.selfSigned(names: ["www.shop.test"], from: Date() - 90 * 86400, until: Date() - 86400)
        let later = try AppCertificate.selfSigned(names: ["www.shop.test"], from: Date() + 86400, until: Date() + 90 * 86400)
        let other = try AppCertificate.selfSigned(names: ["www.shop.test"])
        let cases: [(String, String, String)] = [
            (expired.chain, expired.key, "the certificate expired on"),
            (later.chain, later.key, "the certificate is not valid until"),
            (other.chain, key, "the key does not match the certificate"),
            ("not a certificate\n", key, "the file holds no PEM certificate"),
            (other.chain, "not a key\n", "invalid key: not a PEM private key"),
        ]
        for (i, (chain, keyText, message)) in cases.enumerated() {
            try writeFile(dir + "/bad\(i).pem", chain)
            try writeFile(dir + "/badkey\(i).pem", keyText)
            let r = try kbuild(["certs:add", "shop", dir + "/bad\(i).pem", dir + "/badkey\(i).pem"], dataDir: data)
            XCTAssertNotEqual(r.status, 0, message)
            XCTAssertTrue(r.stderr.contains(message), "\(message): \(r.stderr)")
        }
        XCTAssertTrue(try kbuild(["certs:add", "shop", dir + "/missing.pem", dir + "/key.pem"], dataDir: data).stderr.contains("cannot read the certificate file"))
        // Another app may not serve shop's domain with its own certificate.
        try writeFile(dir + "/other.pem", other.chain)
        try writeFile(dir + "/otherkey.pem", other.key)
        XCTAssertTrue(try kbuild(["certs:add", "other", dir + "/other.pem", dir + "/otherkey.pem"], dataDir: data).stderr.contains("none of other's hosts"))
        XCTAssertEqual(try kbuild(["certs", "shop", "--json"], dataDir: data).stdout.components(separatedBy: "\"id\"").count - 1, 2, "two certificates, no more")

        // HTTPS only: plain HTTP gets a 308 to the same URL on the HTTPS port.
        XCTAssertTrue(try kbuild(["router:settings", "shop", "--redirect-https", "maybe"], dataDir: data).stderr.contains("--redirect-https must be on or off"))
        XCTAssertTrue(try kbuild(["router:settings", "shop", "--redirect-https", "on"], dataDir: data).stdout.contains("redirect https   on"))
        try waitUntil("plain HTTP redirected", timeout: 10) {
            let r = routed(routerPort, host: "www.shop.test", path: "/index.html?x=1")
            return r.status == 308 && r.headers["location"] == "https://www.shop.test:\(httpsPort)/index.html?x=1"
        }
        XCTAssertEqual(try https("www.shop.test", ["--cacert", dir + "/cert.pem"]).stdout.suffix(3), "200", "HTTPS itself is served")
        XCTAssertEqual(try kbuild(["router:settings", "shop", "--redirect-https", "off"], dataDir: data).status, 0)
        try waitUntil("plain HTTP served again", timeout: 10) { routed(routerPort, host: "www.shop.test").status == 200 }

        // An unknown name is refused at the handshake; removing the certificate stops serving the domain.
        XCTAssertEqual(try https("nosuch.test", ["-k"]).status, 35)
        let id = try XCTUnwrap(try kbuild(["certs", "shop"], dataDir: data).stdout.split(separator: "\n").first { $0.contains("www.shop.test") }?
            .split(separator: " ").first.map(String.init))
        XCTAssertEqual(try kbuild(["certs:remove", "shop", id], dataDir: data).status, 0)
        XCTAssertTrue(try kbuild(["certs:remove", "shop", id], dataDir: data).stderr.contains("shop has no certificate \(id)"))
        try waitUntil("www.shop.test no longer served", timeout: 10) { try https("www.shop.test", ["-k"]).status == 35 }
    }
}
