import Foundation
import HTTPTypes
import Hummingbird
import KbuildServer
import XCTest
@testable import Dashboard

/// The dashboard's pure parts: escaping, forms, sealed sessions, CSRF,
/// one-time codes, and which dashboard paths an app token reaches.
final class DashboardUnitTests: XCTestCase {
    func testInterpolatedTextIsEscapedAndMarkupIsNot() {
        let message = "<script>alert(\"x\")</script> & 'q'\u{1b}[31m\u{7}"
        let html: HTML = "<p title=\"\(message)\">\(message)</p>\(HTML(raw: "<br>"))"
        XCTAssertEqual(html.text, "<p title=\"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;\u{FFFD}[31m\u{FFFD}\">"
                       + "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;\u{FFFD}[31m\u{FFFD}</p><br>")
        XCTAssertFalse(html.text.contains("<script"), "tenant text never becomes markup")
        // Tabs and newlines stay (log lines and patches keep their shape).
        XCTAssertEqual(HTML.escape("a\tb\nc"), "a\tb\nc")
        XCTAssertEqual(HTML.query("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9")
    }

    func testFormsDecodeAsBrowsersSendThem() {
        let form = Form("csrf=a%2Bb&key=FOO&value=hello+world%21&empty=&flag&key=second")
        XCTAssertEqual(form["csrf"], "a+b")
        XCTAssertEqual(form["value"], "hello world!")
        XCTAssertEqual(form["empty"], "")
        XCTAssertEqual(form["flag"], "")
        XCTAssertEqual(form.all("key"), ["FOO", "second"])
        XCTAssertNil(form["missing"])
    }

    func testSessionsCannotBeReadForgedStretchedOrReusedAfterLogout() throws {
        let dir = NSTemporaryDirectory() + "dash-keys-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keys = try SessionKeys.loadOrCreate(path: dir + "/dashboard.key")
        let attributes = try FileManager.default.attributesOfItem(atPath: dir + "/dashboard.key")
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        // The same key after a restart.
        let again = try SessionKeys.loadOrCreate(path: dir + "/dashboard.key")
        let session = Session(id: SessionKeys.newID(), token: "kbt_secret", expires: Date().timeIntervalSince1970 + 60, who: "admin")
        let cookie = try keys.seal(session)
        XCTAssertFalse(cookie.contains("kbt_secret"), "the token is not readable in the cookie")
        XCTAssertEqual(again.open(cookie), session)
        // One byte changed, another kbuild's key, garbage, an expired session: no session.
        var bytes = Array(cookie.utf8)
        bytes[bytes.count / 2] = bytes[bytes.count / 2] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        XCTAssertNil(keys.open(String(decoding: bytes, as: UTF8.self)))
        let other = SessionKeys(key: .init(size: .bits256))
        XCTAssertNil(other.open(cookie))
        XCTAssertNil(keys.open("not a cookie"))
        XCTAssertNil(keys.open(String(repeating: "A", count: 9000)))
        var old = session
        old.expires = Date().timeIntervalSince1970 - 1
        XCTAssertNil(keys.open(try keys.seal(old)))
        // CSRF: derived from the session, different for another, refused when missing or wrong.
        let csrf = keys.csrf(session)
        XCTAssertTrue(keys.checkCSRF(csrf, session))
        XCTAssertFalse(keys.checkCSRF(nil, session))
        XCTAssertFalse(keys.checkCSRF("", session))
        XCTAssertFalse(keys.checkCSRF(csrf.dropLast() + "x", session))
        var second = session
        second.id = SessionKeys.newID()
        XCTAssertFalse(keys.checkCSRF(csrf, second))
        // Logged out: the cookie no longer opens, nor after a restart (the key loaded again).
        try keys.revoke(session)
        XCTAssertNil(keys.open(cookie))
        XCTAssertNotNil(keys.open(try keys.seal(second)))
        let restarted = try SessionKeys.loadOrCreate(path: dir + "/dashboard.key")
        XCTAssertNil(restarted.open(cookie), "a logout outlives a restart")
        XCTAssertNotNil(restarted.open(try keys.seal(second)))
    }

    func testOneTimeCodesWorkOnce() {
        let keys = SessionKeys(key: .init(size: .bits256))
        let (code, expires) = keys.makeCode(for: "kbt_x")
        XCTAssertGreaterThan(expires.timeIntervalSinceNow, 60)
        XCTAssertNil(keys.spend("nonsense"))
        XCTAssertEqual(keys.spend(code), "kbt_x")
        XCTAssertNil(keys.spend(code), "a code is spent by its first use")
    }

    func testLoginGoesBackToThisSiteOnly() {
        XCTAssertEqual(Dashboard.safeNext("/apps/web?page=2"), "/apps/web?page=2")
        for bad in [nil, "", "https://evil.example/", "//evil.example/", "/\\evil.example", "apps", "/x\r\nSet-Cookie: a=b", "/\t/evil.example/",
                    "/\n/evil.example", "/ /evil.example", "/a\\b", "/\u{7f}/evil.example"] as [String?] {
            XCTAssertEqual(Dashboard.safeNext(bad), "/", bad ?? "nil")
        }
        XCTAssertTrue(Dashboard.sameOrigin("http://127.0.0.1:7070", host: "127.0.0.1:7070"))
        XCTAssertFalse(Dashboard.sameOrigin("http://evil.example", host: "127.0.0.1:7070"))
    }

    /// The dashboard's paths under the same rule as the API's: an app token reaches its apps' pages and the
    /// filtered lists, not another app's (existing or not), the nodes or the trace.
    func testAppTokensReachTheirOwnPagesOnly() {
        let apps = ["mine"]
        for (method, path, allowed) in [
            (HTTPRequest.Method.get, "/", true), (.get, "/builds", true), (.get, "/events", true), (.post, "/logout", true),
            (.get, "/apps/mine", true), (.get, "/apps/mine/logs", true), (.post, "/apps/mine/rollback", true), (.get, "/apps//mine/", true),
            (.get, "/apps/theirs", false), (.post, "/apps/theirs/scale", false), (.get, "/apps/nosuch/logs", false),
            (.get, "/nodes", false), (.get, "/trace", false), (.get, "/builds/x", false), (.post, "/builds", false), (.get, "/logout", false),
            (.post, "/", false),
        ] {
            XCTAssertEqual(TokenAuthMiddleware<BasicRequestContext>.allows(apps: apps, method: method, path: path), allowed, "\(method) \(path)")
        }
        XCTAssertTrue(DashboardPaths.isPublic("/login"))
        XCTAssertTrue(DashboardPaths.isPublic("/static/kbuild.css"))
        XCTAssertFalse(DashboardPaths.isPublic("/static/../api/v1/apps"))
        XCTAssertFalse(DashboardPaths.isPublic("/"))
        XCTAssertFalse(DashboardPaths.isDashboard("/api/v1/apps"))
        XCTAssertFalse(DashboardPaths.isDashboard("/mine.git/info/refs"))
    }
}
