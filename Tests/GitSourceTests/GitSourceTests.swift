import Foundation
import XCTest
import KbuildCore
import Keg
@testable import GitSource

/// A commit's tree, read with libgit2 into the Keg, is the same tree as a checkout of it.
final class GitSourceTests: XCTestCase {
    var dir = ""
    var keg: Keg!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "kbuild-git-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        keg = try Keg(dataDir: DataDir(root: URL(fileURLWithPath: dir + "/data")))
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: dir)
    }

    @discardableResult
    func git(_ args: String, in repo: String? = nil) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "git -c user.name='Ada Lovelace' -c user.email=ada@example.com -c init.defaultBranch=main " + args]
        p.currentDirectoryURL = URL(fileURLWithPath: repo ?? dir)
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw KbuildError(.io, "git \(args) failed") }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A file holding `text`, for git to read.
    func file(_ text: String) throws -> String {
        let path = dir + "/input-\(UUID().uuidString.prefix(8))"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    func objectCount() throws -> Int {
        try FileManager.default.subpathsOfDirectory(atPath: dir + "/data/keg/objects").filter { $0.count > 3 && !$0.contains(".tmp") }.count
    }

    func testTheTreeIsTheSameAsACheckoutOfIt() throws {
        let repo = dir + "/app"
        try git("init -q app")
        try FileManager.default.createDirectory(atPath: repo + "/src/lib", withIntermediateDirectories: true)
        try Data("print('hello')\n".utf8).write(to: URL(fileURLWithPath: repo + "/src/app.py"))
        try Data("web: python3 src/app.py\n".utf8).write(to: URL(fileURLWithPath: repo + "/Procfile"))
        try Data("#!/bin/sh\necho run\n".utf8).write(to: URL(fileURLWithPath: repo + "/run.sh"))
        chmod(repo + "/run.sh", 0o755)
        try Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }).write(to: URL(fileURLWithPath: repo + "/src/lib/big.bin"))
        try Data().write(to: URL(fileURLWithPath: repo + "/empty"))
        try FileManager.default.createSymbolicLink(atPath: repo + "/src/link.py", withDestinationPath: "app.py")
        try FileManager.default.createSymbolicLink(atPath: repo + "/src/lib/up", withDestinationPath: "../../Procfile")
        try git("add -A && git -c user.name='Ada Lovelace' -c user.email=ada@example.com commit -q -m 'First version'", in: repo)

        let imported = try GitSource.importTree(repository: repo, revision: "HEAD", into: keg)
        XCTAssertEqual(imported.commit, try git("rev-parse HEAD", in: repo))
        XCTAssertEqual(imported.author, "Ada Lovelace")
        XCTAssertEqual(imported.authorEmail, "ada@example.com")
        XCTAssertEqual(imported.message, "First version\n")
        XCTAssertEqual(imported.files, 5)

        let out = dir + "/checkout"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try git("-c tar.umask=0022 archive HEAD | tar -x -C \(out)", in: repo)
        XCTAssertEqual(try keg.put(path: out), imported.tree, "libgit2's tree and keg put of a checkout agree")
        // And back out of the Keg, the same files.
        try keg.get(imported.tree, to: dir + "/restored")
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/restored/src/lib/big.bin"), FileManager.default.contents(atPath: repo + "/src/lib/big.bin"))
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/restored/src/link.py"), "app.py")
        // A branch name works as well as HEAD; an unknown one is named.
        XCTAssertEqual(try GitSource.importTree(repository: repo, revision: "main", into: keg).tree, imported.tree)
        XCTAssertThrowsError(try GitSource.importTree(repository: repo, revision: "no-such-branch", into: keg)) { error in
            XCTAssertEqual((error as? KbuildError)?.code, .notFound)
            XCTAssertTrue("\(error)".contains("no-such-branch"), "\(error)")
        }
    }

    func testBadTreesAreRefusedAndNothingIsStored() throws {
        let repo = dir + "/bad"
        try git("init -q bad")
        let blob = try git("hash-object -w --stdin < /dev/null", in: repo)
        let commitOf = { (tree: String) throws -> String in try self.git("commit-tree \(tree) -m crafted", in: repo) }
        func mktree(_ lines: String) throws -> String { try git("mktree <<'EOF'\n\(lines)\nEOF", in: repo) }
        let hooks = try mktree("100644 blob \(blob)\tx")
        var rows: [(String, String)] = [
            (try commitOf(try mktree("040000 tree \(hooks)\t.git")), ".git entry at \".git\""),
            (try commitOf(try mktree("040000 tree \(hooks)\t.GIT")), ".git entry"),
            (try commitOf(try mktree("100644 blob \(blob)\t..")), "entry named \"..\""),
        ]
        let absTarget = try git("hash-object -w --stdin < \(try file("/etc/passwd"))", in: repo)
        let upTarget = try git("hash-object -w --stdin < \(try file("../../etc/passwd"))", in: repo)
        let sub = try mktree("120000 blob \(upTarget)\tescape")
        rows.append((try commitOf(try mktree("120000 blob \(absTarget)\tpasswd")), "symlink passwd points outside the tree"))
        rows.append((try commitOf(try mktree("040000 tree \(sub)\tdir")), "symlink dir/escape points outside the tree"))
        let head = try commitOf(hooks)
        rows.append((try commitOf(try mktree("160000 commit \(head)\tvendor")), "vendor is a submodule"))
        let before = try objectCount()
        for (commit, want) in rows {
            XCTAssertThrowsError(try GitSource.importTree(repository: repo, revision: commit, into: keg)) { error in
                XCTAssertEqual((error as? KbuildError)?.code, .invalidArgument)
                XCTAssertTrue("\(error)".contains(want), "\(want): \(error)")
            }
        }
        // Over the size limit.
        let big = try git("hash-object -w --stdin < \(try file(String(repeating: "z", count: 5000)))", in: repo)
        let bigCommit = try commitOf(try mktree("100644 blob \(big)\tlarge.bin"))
        XCTAssertThrowsError(try GitSource.importTree(repository: repo, revision: bigCommit, into: keg, limits: SourceLimits(maxFileSize: 1000))) { error in
            XCTAssertTrue("\(error)".contains("large.bin is 5000 bytes, over the limit of 1000"), "\(error)")
        }
        XCTAssertEqual(try objectCount(), before, "nothing stored from a refused tree")
        XCTAssertThrowsError(try GitSource.importTree(repository: dir + "/not-a-repo", revision: "HEAD", into: keg)) { error in
            XCTAssertTrue("\(error)".contains("open the repository \(dir)/not-a-repo"), "\(error)")
        }
    }

    /// The size comes from the object's header: a 512 MiB file of zeros (a
    /// few hundred KiB pushed) is refused without being inflated.
    func testAFileOverTheLimitIsRefusedBeforeItIsRead() throws {
        let repo = dir + "/zeros"
        try git("init -q zeros")
        // 512 MiB of zeros compresses to about 0.5 MiB in git's object store.
        XCTAssertTrue(FileManager.default.createFile(atPath: repo + "/big.bin", contents: nil))
        XCTAssertEqual(truncate(repo + "/big.bin", 536_870_912), 0)
        _ = try git("add big.bin && git -c user.name=A -c user.email=a@b commit -q -m zeros", in: repo)
        unlink(repo + "/big.bin")
        var before = rusage()
        getrusage(RUSAGE_SELF.rawValue, &before)
        XCTAssertThrowsError(try GitSource.importTree(repository: repo, revision: "HEAD", into: keg, limits: SourceLimits(maxFileSize: 1 << 20))) { error in
            XCTAssertTrue("\(error)".contains("big.bin is 536870912 bytes, over the limit of 1048576"), "\(error)")
        }
        var after = rusage()
        getrusage(RUSAGE_SELF.rawValue, &after)
        // ru_maxrss is in KiB: had the blob been inflated, the peak would have grown by 512 MiB.
        XCTAssertLessThan(after.ru_maxrss - before.ru_maxrss, 64 << 10, "the refused file was not read into memory")
        // The whole tree's size is bounded too.
        XCTAssertThrowsError(try GitSource.importTree(repository: repo, revision: "HEAD", into: keg,
                                                      limits: SourceLimits(maxFileSize: 1 << 30, maxTotalSize: 1 << 20))) { error in
            XCTAssertTrue("\(error)".contains("the tree is over the limit of 1048576 bytes"), "\(error)")
        }
    }

    /// A tree nested deeper than the limit is refused with its path, not a stack overflow (6,000 levels).
    func testADeepTreeIsRefusedNotACrash() throws {
        let repo = dir + "/deep"
        try git("init -q deep")
        // One fast-import stream: a file under 6,000 nested directories.
        let path = Array(repeating: "d", count: 6000).joined(separator: "/") + "/f"
        let stream = "commit refs/heads/main\ncommitter A <a@b> 0 +0000\ndata 4\ndeep\nM 100644 inline \(path)\ndata 2\nx\n\n"
        try git("fast-import --quiet < \(try file(stream))", in: repo)
        let before = try objectCount()
        XCTAssertThrowsError(try GitSource.importTree(repository: repo, revision: "main", into: keg)) { error in
            XCTAssertEqual((error as? KbuildError)?.code, .invalidArgument)
            XCTAssertTrue("\(error)".contains("is nested over 64 directories deep"), "\(error)")
        }
        XCTAssertEqual(try objectCount(), before, "nothing stored from a refused tree")
        // A tree within the limit imports.
        let fine = Array(repeating: "d", count: 60).joined(separator: "/") + "/f"
        try git("fast-import --quiet < \(try file(stream.replacingOccurrences(of: path, with: fine).replacingOccurrences(of: "refs/heads/main", with: "refs/heads/fine")))", in: repo)
        XCTAssertNoThrow(try GitSource.importTree(repository: repo, revision: "fine", into: keg))
    }

    /// Symlinks are followed through the tree's other symlinks: `d/y -> ..`
    /// with `z -> d/y/..` is outside, though each looks fine alone.
    func testLinksThroughLinksAreResolved() throws {
        let links: [String: [UInt8]] = ["d/y": Array("..".utf8), "z": Array("d/y/..".utf8), "ok": Array("d/y/d".utf8),
                                        "loop1": Array("loop2".utf8), "loop2": Array("loop1".utf8)]
        XCTAssertNoThrow(try GitSource.checkLink(links["d/y"]!, at: "d/y", links: links))
        XCTAssertNoThrow(try GitSource.checkLink(links["ok"]!, at: "ok", links: links))
        XCTAssertThrowsError(try GitSource.checkLink(links["z"]!, at: "z", links: links)) { error in
            XCTAssertTrue("\(error)".contains("symlink z points outside the tree"), "\(error)")
        }
        XCTAssertThrowsError(try GitSource.checkLink(links["loop1"]!, at: "loop1", links: links)) { error in
            XCTAssertTrue("\(error)".contains("over 40 symlinks"), "\(error)")
        }
        // The same two links in a pushed tree: refused.
        let repo = dir + "/links"
        try git("init -q links")
        try FileManager.default.createDirectory(atPath: repo + "/d", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: repo + "/d/y", withDestinationPath: "..")
        try FileManager.default.createSymbolicLink(atPath: repo + "/z", withDestinationPath: "d/y/..")
        _ = try git("add -A && git -c user.name=A -c user.email=a@b commit -q -m links", in: repo)
        XCTAssertThrowsError(try GitSource.importTree(repository: repo, revision: "HEAD", into: keg)) { error in
            XCTAssertTrue("\(error)".contains("symlink z points outside the tree"), "\(error)")
        }
    }

    func testLinkTargetsTable() {
        let rows: [(String, String, Bool)] = [
            ("a", "b", true), ("d/a", "../b", true), ("d/e/a", "../../b", true), ("a", "./b/../c", true),
            ("a", "../b", false), ("d/a", "../../b", false), ("a", "/etc", false), ("a", "", false), ("a", "b/../../c", false),
        ]
        for (path, target, ok) in rows {
            let threw = (try? GitSource.checkLink(Array(target.utf8), at: path)) == nil
            XCTAssertEqual(!threw, ok, "\(path) -> \(target)")
        }
    }
}
