import Foundation
import XCTest

/// One tenant, holding only an app token, against another: what it must not
/// read, take or pass for (issue 12's confirmed attacks, each on a real `kbuild up`).
final class TenantTests: XCTestCase {
    /// curl: status, body.
    func curl(_ args: [String]) throws -> (code: Int, body: String) {
        let r = try sh("/usr/bin/curl", ["-s", "-o", "/dev/stderr", "-w", "%{http_code}", "--max-time", "20"] + args)
        return (Int(r.stdout) ?? -1, r.stderr)
    }

    func testATenantReadsOnlyWhatItsImageReaches() throws {
        let data = try makeData("tenants")
        chmod(data, 0o755)
        let server = try startKbuildUp(self, data: data)
        var st = stat()
        XCTAssertEqual(stat(data, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o700, "a data dir that was 0755 is made private")

        let mine = try makeApp("mine", data: data)
        let theirs = try makeApp("theirs", data: data)
        XCTAssertEqual(try kbuild(["config:set", "theirs", "DB_PASSWORD=hunter2-secret"], dataDir: data).status, 0)
        for work in [mine, theirs] { XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0) }
        let made = try kbuild(["tokens:create", "mate", "--app", "mine"], dataDir: data)
        XCTAssertEqual(made.status, 0, made.stderr)
        let token = trimmed(made.stdout)
        let auth = ["-H", "Authorization: Bearer \(token)"]

        // Another app's config record and image, by digest, through this app's repository: 404, as if absent.
        let config = trimmed(try kbuild(["ref", "get", "apps/theirs/config"], dataDir: data).stdout)
        let theirImage = trimmed(try kbuild(["ref", "get", "apps/theirs/image"], dataDir: data).stdout)
        XCTAssertTrue(config.hasPrefix("K-") && theirImage.hasPrefix("K-"), config + theirImage)
        func digest(_ kid: String) -> String { "sha256:" + kid.dropFirst(2) }
        let absent = "sha256:" + String(repeating: "ab", count: 32)
        let leaked = try curl(auth + [server.url + "/v2/mine/blobs/\(digest(config))"])
        XCTAssertEqual(leaked.code, 404)
        XCTAssertTrue(leaked.body.contains("BLOB_UNKNOWN") && !leaked.body.contains("hunter2"), leaked.body)
        XCTAssertEqual(try curl(auth + ["-I", server.url + "/v2/mine/blobs/\(digest(config))"]).code, 404, "HEAD tells nothing either")
        XCTAssertEqual(try curl(auth + ["-I", server.url + "/v2/mine/blobs/\(absent)"]).code, 404)
        let manifest = try curl(auth + [server.url + "/v2/mine/manifests/\(digest(theirImage))"])
        XCTAssertEqual(manifest.code, 404)
        XCTAssertTrue(manifest.body.contains("MANIFEST_UNKNOWN"), manifest.body)
        XCTAssertEqual(try curl(auth + [server.url + "/v2/theirs/manifests/latest"]).code, 403)
        // Its own image: the manifest by tag and by digest, its config and every layer.
        let own = try curl(auth + [server.url + "/v2/mine/manifests/latest"])
        XCTAssertEqual(own.code, 200, own.body)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(own.body.utf8)) as? [String: Any])
        let blobs = [((json["config"] as? [String: Any])?["digest"] as? String)].compactMap { $0 }
            + ((json["layers"] as? [[String: Any]]) ?? []).compactMap { $0["digest"] as? String }
        XCTAssertGreaterThanOrEqual(blobs.count, 2)
        for blob in blobs { XCTAssertEqual(try curl(auth + ["-I", server.url + "/v2/mine/blobs/\(blob)"]).code, 200, blob) }
        let myImage = trimmed(try kbuild(["ref", "get", "apps/mine/image"], dataDir: data).stdout)
        XCTAssertEqual(try curl(auth + [server.url + "/v2/mine/manifests/\(digest(myImage))"]).code, 200)
        // The admin reads any object (documented in ARCHITECTURE.md's security model).
        XCTAssertEqual(try curl(["-u", "x:" + server.token, server.url + "/v2/mine/blobs/\(digest(config))"]).code, 200)

        // The actor is the token, whatever the client claims.
        let set = try curl(auth + ["-X", "PATCH", "-H", "Kbuild-Actor: admin", "-H", "Content-Type: application/json",
                                   "--data-binary", #"{"set":{"A":"1"},"unset":[]}"#, server.url + "/api/v1/apps/mine/config"])
        XCTAssertEqual(set.code, 200, set.body)
        let releases = try kbuild(["releases", "mine", "--json"], dataDir: data)
        let list = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(releases.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(list.first?["createdBy"] as? String, "token:mate", releases.stdout)

        // An IP literal is nobody's domain.
        for ip in ["127.0.0.1", "10.0.0.1", "1.2.3.4"] {
            let r = try kbuild(["domains:add", "mine", ip], dataDir: data)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains("an IP address cannot be an app's domain"), r.stderr)
        }
        // A body over the API's limit is 413, not 500.
        let big = try tempDir(self, "big") + "/body.json"
        try Data(("{\"set\":{\"A\":\"" + String(repeating: "x", count: 2 << 20) + "\"},\"unset\":[]}").utf8).write(to: URL(fileURLWithPath: big))
        let tooBig = try curl(auth + ["-X", "PATCH", "-H", "Content-Type: application/json", "--data-binary", "@" + big, server.url + "/api/v1/apps/mine/config"])
        XCTAssertEqual(tooBig.code, 413, tooBig.body)

        // Escape sequences in a commit's author and message are shown, not obeyed.
        try writeFile(mine + "/www/index.html", "again\n")
        try git(["add", "-A"], in: mine)
        let evil = "Evil \u{1b}]0;pwned\u{07}\u{1b}[2J"
        XCTAssertEqual(try sh("/usr/bin/git", ["-C", mine, "-c", "user.name=\(evil)", "-c", "user.email=e@example.com", "commit", "-q", "-m",
                                               "msg \u{1b}[31mred"]).status, 0)
        let push = try git(["push", "kbuild", "main"], in: mine)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertFalse(push.stderr.contains("\u{1b}"), "no raw escape in the push output")
        XCTAssertTrue(push.stderr.contains("Evil \\x1b]0;pwned\\x07\\x1b[2J"), push.stderr)
        let trace = try kbuild(["trace", "mine"], dataDir: data)
        XCTAssertEqual(trace.status, 0, trace.stderr)
        XCTAssertFalse(trace.stdout.contains("\u{1b}"), trace.stdout)
        XCTAssertTrue(trace.stdout.contains("msg \\x1b[31mred"), trace.stdout)

        // A token does not outlive its app: destroyed and made again, the name is a new app.
        XCTAssertEqual(try kbuild(["apps:destroy", "mine", "--confirm", "mine"], dataDir: data).status, 0)
        XCTAssertEqual(try kbuild(["apps:create", "mine", "--stack", "busybox"], dataDir: data).status, 0)
        try waitUntil("the token is gone", timeout: 5) { try curl(auth + [server.url + "/api/v1/apps/mine"]).code == 401 }
        XCTAssertFalse(try kbuild(["tokens"], dataDir: data).stdout.contains("mate"), "a token left with no app is revoked")
        // Nor does the new app's token see the old app's image or logs.
        let fresh = trimmed(try kbuild(["tokens:create", "newmate", "--app", "mine"], dataDir: data).stdout)
        XCTAssertEqual(try curl(["-H", "Authorization: Bearer \(fresh)", server.url + "/v2/mine/manifests/latest"]).code, 404)
        let logs = try sh(kbuildBinary, ["logs", "mine"], env: ["KBUILD_URL": server.url, "KBUILD_TOKEN": fresh])
        XCTAssertFalse(logs.stdout.contains("hello") || logs.stdout.contains("serving on"), logs.stdout)
    }
}
