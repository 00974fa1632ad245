import Foundation
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
}
