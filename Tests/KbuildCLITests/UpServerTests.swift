import XCTest
import Foundation

/// `kbuild up` as a user runs it: a real process, a real socket, real curl.
final class UpServerTests: XCTestCase {
    func startUp(_ data: String) throws -> KbuildServer {
        try startKbuildUp(self, data: data)
    }

    /// curl, returning status code, headers and body.
    func curl(_ args: [String]) throws -> (code: Int, headers: String, body: Data) {
        let dir = NSTemporaryDirectory() + "curl-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let r = try sh("/usr/bin/curl", ["-sS", "-o", dir + "/body", "-D", dir + "/headers", "-w", "%{http_code}", "--max-time", "30"] + args)
        let body = (try? Data(contentsOf: URL(fileURLWithPath: dir + "/body"))) ?? Data()
        let headers = (try? String(contentsOfFile: dir + "/headers", encoding: .utf8)) ?? ""
        return (Int(r.stdout) ?? -1, headers.lowercased(), body)
    }

    func testRegistryServesStacksToSkopeoUmociAndRunc() throws {
        let dir = try tempDir(self, "registry")
        let data = dir + "/data"
        XCTAssertEqual(try kbuild(["stack", "create", "busybox"], dataDir: data).status, 0)
        let ls = try kbuild(["stack", "ls", "--json"], dataDir: data)
        let rows = try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as? [[String: Any]]
        let image = try XCTUnwrap(rows?.first?["image"] as? String)
        let digest = "sha256:" + image.dropFirst(2)
        let server = try startUp(data)
        let host = server.url.replacingOccurrences(of: "http://", with: "")
        let auth = ["-u", "kbuild:" + server.token]

        let anonymous = try curl([server.url + "/v2/"])
        XCTAssertEqual(anonymous.code, 401)
        XCTAssertTrue(anonymous.headers.contains("www-authenticate: basic realm=\"kbuild\""), anonymous.headers)
        let version = try curl(auth + [server.url + "/v2/"])
        XCTAssertEqual(version.code, 200)
        XCTAssertTrue(version.headers.contains("docker-distribution-api-version: registry/2.0"), version.headers)
        let tags = try curl(auth + [server.url + "/v2/stacks/busybox/tags/list"])
        XCTAssertEqual(String(decoding: tags.body, as: UTF8.self), #"{"name":"stacks/busybox","tags":["latest"]}"#)
        let head = try curl(auth + ["-I", server.url + "/v2/stacks/busybox/manifests/latest"])
        XCTAssertEqual(head.code, 200)
        XCTAssertTrue(head.headers.contains("docker-content-digest: \(digest)"), head.headers)

        // skopeo sees the stack's KID as the image digest, and its labels.
        let inspect = try sh("/usr/bin/skopeo", ["inspect", "--creds", "kbuild:" + server.token, "--tls-verify=false", "docker://\(host)/stacks/busybox:latest"])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        let info = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(info?["Digest"] as? String, digest)
        XCTAssertEqual((info?["Labels"] as? [String: String])?["dev.kbuild.stack"], "busybox")
        // skopeo copy pulls it, umoci verifies and unpacks it, runc runs it.
        let copy = try sh("/usr/bin/skopeo", ["copy", "--src-creds", "kbuild:" + server.token, "--src-tls-verify=false",
                                             "docker://\(host)/stacks/busybox:latest", "oci:\(dir)/pulled:busybox"])
        XCTAssertEqual(copy.status, 0, copy.stderr)
        let unpack = try sh("/usr/bin/umoci", ["unpack", "--image", "\(dir)/pulled:busybox", dir + "/bundle"])
        XCTAssertEqual(unpack.status, 0, unpack.stderr)
        let config = dir + "/bundle/config.json"
        var json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: config))) as? [String: Any])
        var process = try XCTUnwrap(json["process"] as? [String: Any])
        process["args"] = ["/bin/echo", "pulled from kbuild"]
        process["terminal"] = false
        json["process"] = process
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: config))
        let runc = try sh("/usr/sbin/runc", ["run", "--bundle", dir + "/bundle", "kbuild-registry-\(getpid())"])
        XCTAssertEqual(runc.stdout, "pulled from kbuild\n", runc.stderr)

        // Bad input, in the distribution spec's error format.
        let rows2: [(String, Int, String)] = [
            ("/v2/nope/manifests/latest", 404, "MANIFEST_UNKNOWN"),
            ("/v2/stacks/busybox/manifests/v9", 404, "MANIFEST_UNKNOWN"),
            ("/v2/stacks/busybox/blobs/sha256:1234", 400, "DIGEST_INVALID"),
            ("/v2/stacks/busybox/blobs/sha256:" + String(repeating: "0", count: 64), 404, "BLOB_UNKNOWN"),
            ("/v2/Upper/manifests/latest", 404, "NAME_UNKNOWN"),
            ("/v2/nope/tags/list", 404, "NAME_UNKNOWN"),
        ]
        for (path, code, error) in rows2 {
            let r = try curl(auth + [server.url + path])
            XCTAssertEqual(r.code, code, path)
            XCTAssertTrue(String(decoding: r.body, as: UTF8.self).contains("\"code\":\"\(error)\""), "\(path): \(String(decoding: r.body, as: UTF8.self))")
        }
    }

    func testRegistryPushWithSkopeoAndUploadsAndTheirBadInput() throws {
        let dir = try tempDir(self, "push")
        let data = dir + "/data"
        // An image the registry does not have yet: a small root filesystem of its own, from another data dir.
        let other = dir + "/other"
        let root = dir + "/rootfs"
        try FileManager.default.createDirectory(atPath: root + "/bin", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: root + "/bin/busybox")
        try Data("pushed through kbuild's registry\n".utf8).write(to: URL(fileURLWithPath: root + "/hello.txt"))
        XCTAssertEqual(try kbuild(["stack", "import", root, "pushme"], dataDir: other).status, 0)
        XCTAssertEqual(try kbuild(["stack", "export", "pushme", dir + "/layout"], dataDir: other).status, 0)
        let server = try startUp(data)
        let host = server.url.replacingOccurrences(of: "http://", with: "")
        let creds = "kbuild:" + server.token
        let auth = ["-u", creds]

        // skopeo: OCI layout → kbuild's registry → OCI layout, digests identical.
        let push = try sh("/usr/bin/skopeo", ["copy", "--preserve-digests", "--dest-creds", creds, "--dest-tls-verify=false",
                                             "oci:\(dir)/layout:pushme", "docker://\(host)/apps/pushme:v1"])
        XCTAssertEqual(push.status, 0, push.stderr)
        let pull = try sh("/usr/bin/skopeo", ["copy", "--preserve-digests", "--src-creds", creds, "--src-tls-verify=false",
                                             "docker://\(host)/apps/pushme:v1", "oci:\(dir)/back:pushme"])
        XCTAssertEqual(pull.status, 0, pull.stderr)
        func manifestDigest(_ layout: String) throws -> String? {
            let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: layout + "/index.json"))) as? [String: Any]
            return (index?["manifests"] as? [[String: Any]])?.first?["digest"] as? String
        }
        XCTAssertNotNil(try manifestDigest(dir + "/layout"))
        XCTAssertEqual(try manifestDigest(dir + "/back"), try manifestDigest(dir + "/layout"))
        let tags = try curl(auth + [server.url + "/v2/apps/pushme/tags/list"])
        XCTAssertEqual(String(decoding: tags.body, as: UTF8.self), #"{"name":"apps/pushme","tags":["v1"]}"#)

        // A chunked upload by hand: POST, two PATCHes, PUT with the digest.
        let blob = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let digest = "sha256:" + (try sha256Hex(blob))
        try blob.prefix(100_000).write(to: URL(fileURLWithPath: dir + "/part1"))
        try blob.dropFirst(100_000).write(to: URL(fileURLWithPath: dir + "/part2"))
        func location(_ headers: String) -> String {
            headers.split(separator: "\r\n").first { $0.hasPrefix("location: ") }.map { String($0.dropFirst(10)) } ?? ""
        }
        let start = try curl(auth + ["-X", "POST", server.url + "/v2/apps/chunks/blobs/uploads/"])
        XCTAssertEqual(start.code, 202)
        let upload = server.url + location(start.headers)
        let first = try curl(auth + ["-X", "PATCH", "-H", "Content-Range: 0-99999", "--data-binary", "@\(dir)/part1", upload])
        XCTAssertEqual(first.code, 202)
        XCTAssertTrue(first.headers.contains("range: 0-99999"), first.headers)
        let wrongPlace = try curl(auth + ["-X", "PATCH", "-H", "Content-Range: 5-10", "--data-binary", "@\(dir)/part1", upload])
        XCTAssertEqual(wrongPlace.code, 416)
        // Truncated: finishing after the first chunk names the whole blob's digest → refused, nothing stored.
        let early = try curl(auth + ["-X", "POST", server.url + "/v2/apps/chunks/blobs/uploads/"])
        let earlyUpload = server.url + location(early.headers)
        _ = try curl(auth + ["-X", "PATCH", "--data-binary", "@\(dir)/part1", earlyUpload])
        let truncated = try curl(auth + ["-X", "PUT", earlyUpload + "?digest=" + digest])
        XCTAssertEqual(truncated.code, 400)
        XCTAssertTrue(String(decoding: truncated.body, as: UTF8.self).contains("DIGEST_INVALID"))
        XCTAssertEqual(try curl(auth + ["-I", server.url + "/v2/apps/chunks/blobs/" + digest]).code, 404, "nothing half-stored")
        let done = try curl(auth + ["-X", "PUT", "--data-binary", "@\(dir)/part2", upload + "?digest=" + digest])
        XCTAssertEqual(done.code, 201, String(decoding: done.body, as: UTF8.self))
        let fetched = try curl(auth + [server.url + "/v2/apps/chunks/blobs/" + digest])
        XCTAssertEqual(fetched.body, blob)
        // Monolithic with a wrong digest: refused.
        let wrong = try curl(auth + ["-X", "POST", "--data-binary", "@\(dir)/part1", server.url + "/v2/apps/mono/blobs/uploads/?digest=" + digest])
        XCTAssertEqual(wrong.code, 400)
        // Cross-repository mount of a blob that is here: 201 without a byte sent.
        let mount = try curl(auth + ["-X", "POST", server.url + "/v2/apps/other/blobs/uploads/?mount=\(digest)&from=apps/chunks"])
        XCTAssertEqual(mount.code, 201)
        // A manifest that names a missing blob: refused, the tag not moved.
        let missing = "sha256:" + String(repeating: "1", count: 64)
        let manifest = #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(digest)","size":300000},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\#(missing)","size":1}]}"#
        try Data(manifest.utf8).write(to: URL(fileURLWithPath: dir + "/manifest.json"))
        let bad = try curl(auth + ["-X", "PUT", "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json",
                                   "--data-binary", "@\(dir)/manifest.json", server.url + "/v2/apps/pushme/manifests/v1"])
        XCTAssertEqual(bad.code, 400)
        XCTAssertTrue(String(decoding: bad.body, as: UTF8.self).contains("MANIFEST_BLOB_UNKNOWN"))
        let still = try curl(auth + ["-I", server.url + "/v2/apps/pushme/manifests/v1"])
        XCTAssertTrue(still.headers.contains("docker-content-digest: \(try manifestDigest(dir + "/layout") ?? "")"), still.headers)
        // Descriptor sizes are checked against the Keg: wrong, negative or huge.
        for size in ["\(blob.count + 1)", "-1", "9223372036854775807"] {
            let lying = #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(digest)","size":\#(size)},"layers":[]}"#
            try Data(lying.utf8).write(to: URL(fileURLWithPath: dir + "/lying.json"))
            let refused = try curl(auth + ["-X", "PUT", "--data-binary", "@\(dir)/lying.json", server.url + "/v2/apps/liar/manifests/v1"])
            XCTAssertEqual(refused.code, 400, size)
            XCTAssertTrue(String(decoding: refused.body, as: UTF8.self).contains("SIZE_INVALID"), "\(size): \(String(decoding: refused.body, as: UTF8.self))")
        }
        // Stacks are not pushed over.
        let stack = try curl(auth + ["-X", "PUT", "--data-binary", "@\(dir)/manifest.json", server.url + "/v2/stacks/busybox/manifests/latest"])
        XCTAssertEqual(stack.code, 403)
        XCTAssertTrue(String(decoding: stack.body, as: UTF8.self).contains("DENIED"))
        // Without credentials: 401.
        XCTAssertEqual(try curl(["-X", "POST", server.url + "/v2/apps/x/blobs/uploads/"]).code, 401)
    }

    func testUpServesObjectsByKIDWithAuthRangesAndClearErrors() throws {
        let dir = try tempDir(self, "up")
        let data = dir + "/data"
        let server = try startUp(data)
        var st = stat()
        XCTAssertEqual(stat(data + "/admin.token", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600, "the admin token is private")
        XCTAssertTrue(server.token.hasPrefix("kb_"))

        // Objects put by the CLI while the server runs are served at once.
        let small = Data("hello from the keg\n".utf8)
        try small.write(to: URL(fileURLWithPath: dir + "/small"))
        var big = Data(count: 5 << 20)
        for i in 0..<big.count { big[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 13) }
        try big.write(to: URL(fileURLWithPath: dir + "/big"))
        let smallKID = try kbuild(["keg", "put", dir + "/small"], dataDir: data).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let bigKID = try kbuild(["keg", "put", dir + "/big"], dataDir: data).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let auth = ["-H", "Authorization: Bearer \(server.token)"]
        let objects = server.url + "/v1/objects/"

        // No token, a wrong token: 401, and nothing about the object.
        let anonymous = try curl([objects + smallKID])
        XCTAssertEqual(anonymous.code, 401)
        XCTAssertFalse(String(decoding: anonymous.body, as: UTF8.self).contains("hello"))
        XCTAssertEqual(try curl(["-H", "Authorization: Bearer kb_wrong", objects + smallKID]).code, 401)
        XCTAssertEqual(try curl([server.url + "/healthz"]).code, 200)

        let get = try curl(auth + [objects + smallKID])
        XCTAssertEqual(get.code, 200)
        XCTAssertEqual(get.body, small)
        XCTAssertTrue(get.headers.contains("etag: \"\(smallKID.lowercased())\""), get.headers)
        XCTAssertTrue(get.headers.contains("docker-content-digest: sha256:\(smallKID.dropFirst(2))"), get.headers)
        // Basic auth with the token as the password, as git and docker send it.
        XCTAssertEqual(try curl(["-u", "admin:\(server.token)", objects + smallKID]).body, small)

        // With -I curl writes the headers where the body would go; a HEAD response has no body.
        let head = try curl(auth + ["-I", objects + bigKID])
        let headHeaders = String(decoding: head.body, as: UTF8.self).lowercased()
        XCTAssertEqual(head.code, 200)
        XCTAssertTrue(headHeaders.contains("content-length: \(big.count)"), headHeaders)
        XCTAssertTrue(headHeaders.contains("accept-ranges: bytes"), headHeaders)
        XCTAssertTrue(headHeaders.contains("kbuild-kind: file"), headHeaders)

        let whole = try curl(auth + [objects + bigKID])
        XCTAssertEqual(whole.body, big, "a chunked file streams back whole")
        let part = try curl(auth + ["-H", "Range: bytes=100000-3000000", objects + bigKID])
        XCTAssertEqual(part.code, 206)
        XCTAssertEqual(part.body, big[100000...3000000])
        XCTAssertTrue(part.headers.contains("content-range: bytes 100000-3000000/\(big.count)"), part.headers)
        let suffix = try curl(auth + ["-H", "Range: bytes=-7", objects + smallKID])
        XCTAssertEqual(suffix.code, 206)
        XCTAssertEqual(suffix.body, small.suffix(7))

        let beyond = try curl(auth + ["-H", "Range: bytes=\(small.count)-", objects + smallKID])
        XCTAssertEqual(beyond.code, 416)
        XCTAssertTrue(beyond.headers.contains("content-range: bytes */\(small.count)"), beyond.headers)
        XCTAssertTrue(String(decoding: beyond.body, as: UTF8.self).contains("beyond the end"))

        let missing = try curl(auth + [objects + "K-" + String(repeating: "0", count: 64)])
        XCTAssertEqual(missing.code, 404)
        XCTAssertTrue(String(decoding: missing.body, as: UTF8.self).contains("not in the Keg"))
        let malformed = try curl(auth + [objects + "K-nothex"])
        XCTAssertEqual(malformed.code, 400)
        XCTAssertTrue(String(decoding: malformed.body, as: UTF8.self).contains("failed to parse KID"))

        // Another host pulls a whole tree it lacks, verified object by object.
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
        try small.write(to: URL(fileURLWithPath: tree + "/small"))
        try big.write(to: URL(fileURLWithPath: tree + "/sub/big"))
        try FileManager.default.createSymbolicLink(atPath: tree + "/link", withDestinationPath: "sub/big")
        let treeKID = try kbuild(["keg", "put", tree], dataDir: data).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let other = dir + "/other-host"
        let denied = try kbuild(["keg", "pull", treeKID, "--from", server.url, "--token", "kb_wrong"], dataDir: other)
        XCTAssertNotEqual(denied.status, 0)
        XCTAssertTrue(denied.stderr.contains("HTTP 401"), denied.stderr)
        let pull = try kbuild(["keg", "pull", treeKID, "--from", server.url], dataDir: other, env: ["KBUILD_TOKEN": server.token])
        XCTAssertEqual(pull.status, 0, pull.stderr)
        XCTAssertTrue(pull.stdout.contains("pulled \(treeKID): 4 objects"), pull.stdout)
        let restored = try kbuild(["keg", "get", treeKID, dir + "/pulled"], dataDir: other)
        XCTAssertEqual(restored.status, 0, restored.stderr)
        XCTAssertEqual(try sh("/usr/bin/diff", ["-r", "--no-dereference", tree, dir + "/pulled"]).status, 0)
        let again = try kbuild(["keg", "pull", treeKID, "--from", server.url], dataDir: other, env: ["KBUILD_TOKEN": server.token])
        XCTAssertTrue(again.stdout.contains("0 objects") && again.stdout.contains("1 already here"), again.stdout)
        let absent = try kbuild(["keg", "pull", "K-" + String(repeating: "0", count: 64), "--from", server.url], dataDir: other, env: ["KBUILD_TOKEN": server.token])
        XCTAssertTrue(absent.stderr.contains("HTTP 404"), absent.stderr)

        // Graceful shutdown on SIGTERM, within a bounded time.
        kill(server.process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while server.process.isRunning && Date() < deadline { usleep(50_000) }
        XCTAssertFalse(server.process.isRunning, "kbuild up should stop on SIGTERM")
        XCTAssertEqual(server.process.terminationStatus, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: data + "/server.url"))
    }
}
