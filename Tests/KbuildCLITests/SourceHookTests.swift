import Foundation
import XCTest

/// `kbuild source import` inside a real pre-receive hook of a real `git push`:
/// the pushed objects are still in git's quarantine there.
final class SourceHookTests: XCTestCase {
    func testAPushIsReadFromQuarantineAndABadTreeIsRejected() throws {
        let dir = try tempDir(self, "hook")
        let data = dir + "/data"
        XCTAssertEqual(try git(["init", "-q", "--bare", dir + "/app.git"], in: dir).status, 0)
        let hook = dir + "/app.git/hooks/pre-receive"
        try """
            #!/bin/sh
            # What kbuild's gateway will do: read each pushed commit into the Keg, or refuse the push.
            while read old new ref; do
              \(kbuildBinary) source import --data-dir \(data) "$new" || exit 1
            done
            """.write(toFile: hook, atomically: true, encoding: .utf8)
        chmod(hook, 0o755)

        let work = dir + "/work"
        XCTAssertEqual(try git(["init", "-q", work], in: dir).status, 0)
        try "web: python3 -m http.server $PORT\n".write(toFile: work + "/Procfile", atomically: true, encoding: .utf8)
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "Serve files"], in: work)
        let push = try git(["push", "-q", dir + "/app.git", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        // git shows the hook's output to the pusher as remote: lines.
        let line = try XCTUnwrap(push.stderr.split(separator: "\n").first { $0.contains("remote: K-") }, push.stderr)
        let sha = try git(["rev-parse", "HEAD"], in: work).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(line.contains(String(sha.prefix(12))), "\(line) names the commit")
        let kid = String(line.split(separator: " ")[1])
        let checkout = dir + "/checkout"
        XCTAssertEqual(try kbuild(["keg", "get", kid, checkout], dataDir: data).status, 0)
        XCTAssertEqual(try String(contentsOfFile: checkout + "/Procfile", encoding: .utf8), "web: python3 -m http.server $PORT\n")

        // A tree with a .git entry: the hook refuses, the push fails, the branch stays.
        let blob = try sh("/usr/bin/git", ["-C", work, "hash-object", "-w", "/dev/null"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let inner = try sh("/usr/bin/git", ["-C", work, "mktree"], stdin: Data("100644 blob \(blob)\tpost-checkout\n".utf8)).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let hooks = try sh("/usr/bin/git", ["-C", work, "mktree"], stdin: Data("040000 tree \(inner)\thooks\n".utf8)).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let root = try sh("/usr/bin/git", ["-C", work, "mktree"], stdin: Data("040000 tree \(hooks)\t.git\n".utf8)).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let evil = try git(["commit-tree", root, "-p", "HEAD", "-m", "evil"], in: work).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let rejected = try git(["push", "-q", dir + "/app.git", "\(evil):refs/heads/main"], in: work)
        XCTAssertNotEqual(rejected.status, 0)
        XCTAssertTrue(rejected.stderr.contains("remote: Error: refusing the push: the tree has a .git entry at \".git\""), rejected.stderr)
        XCTAssertTrue(rejected.stderr.contains("pre-receive hook declined"), rejected.stderr)
        let head = try git(["rev-parse", "main"], in: dir + "/app.git").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(head, sha, "the branch did not move")
    }
}
