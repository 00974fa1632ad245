import Foundation
import XCTest
@testable import Keg
import KbuildCore

/// Tree archives (OCI layers kept as recipes): GNU tar reads them back to the
/// same files, any range reads as the same bytes as the whole, the hash made
/// from the source directory is the hash of the bytes the Keg serves, and gc
/// and fsck see the tree an archive names.
final class TreeArchiveTests: XCTestCase {
    /// A directory with what a tar writer gets wrong: long names (pax `path`),
    /// a long symlink target (pax `linkpath`), an empty file, an empty
    /// directory, a chunked file, setuid-free odd modes, non-ASCII names.
    func makeSource(_ root: URL) throws -> String {
        let src = root.appendingPathComponent("src").path
        let long = String(repeating: "d", count: 90)
        for dir in ["", "/a", "/a/\(long)", "/empty", "/ünï"] {
            XCTAssertEqual(mkdir(src + dir, 0o755), 0)
        }
        try write(Array("hello\n".utf8), to: src + "/hello.txt")
        try write([], to: src + "/a/empty")
        try write(randomBytes(5000, seed: 1), to: src + "/a/\(long)/\(String(repeating: "f", count: 60)).bin", mode: 0o600)
        try write(randomBytes(40 << 20, seed: 2), to: src + "/a/big.bin", mode: 0o755)
        try write(Array("x".utf8), to: src + "/ünï/datei-ß")
        XCTAssertEqual(symlink("hello.txt", src + "/link"), 0)
        XCTAssertEqual(symlink(String(repeating: "t/", count: 70) + "end", src + "/far"), 0)
        XCTAssertEqual(chmod(src + "/a", 0o750), 0)
        return src
    }

    func testGNUTarReadsTheArchiveBackToTheSameFiles() throws {
        let (keg, root) = try makeKeg(self)
        let src = try makeSource(root)
        let (tree, kid, size) = try keg.putWithArchive(directory: src)
        XCTAssertEqual(tree, try keg.put(path: src), "the tree is the one put makes")
        XCTAssertEqual(try keg.kind(of: kid), .treeArchive)
        XCTAssertEqual(try keg.logicalSize(of: kid), size)
        XCTAssertEqual(size % 512, 0)

        // The bytes the Keg serves hash to the KID: the hash from the source is the hash of the tar.
        let tar = root.appendingPathComponent("layer.tar").path
        try keg.get(kid, to: tar)
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: tar)))
        XCTAssertEqual(UInt64(bytes.count), size)
        XCTAssertEqual(KID(hashing: bytes), kid)
        XCTAssertEqual(try keg.putArchive(of: tree).kid, kid, "the hash from the Keg's files is the same")

        let out = root.appendingPathComponent("out").path
        XCTAssertEqual(mkdir(out, 0o755), 0)
        let tarRun = Process()
        tarRun.executableURL = URL(fileURLWithPath: "/bin/tar")
        tarRun.arguments = ["-xpf", tar, "-C", out]
        let err = Pipe()
        tarRun.standardError = err
        try tarRun.run()
        tarRun.waitUntilExit()
        XCTAssertEqual(tarRun.terminationStatus, 0, String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        XCTAssertEqual(listing(out), listing(src))
        XCTAssertEqual(try keg.put(path: out), tree, "what tar extracts is the same tree")

        // Every header: owner 0:0, mtime 1980-01-01T00:00:01Z.
        let list = Process()
        list.executableURL = URL(fileURLWithPath: "/bin/tar")
        list.arguments = ["--numeric-owner", "--full-time", "-tvf", tar]
        let pipe = Pipe()
        list.standardOutput = pipe
        try list.run()
        let lines = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        list.waitUntilExit()
        XCTAssertEqual(lines.count, 11)
        for line in lines {
            XCTAssertTrue(line.contains(" 0/0 ") && line.contains("1980-01-01 00:00:01"), String(line))
        }
    }

    func testAnyRangeReadsAsTheSameBytesAsTheWhole() throws {
        let (keg, root) = try makeKeg(self)
        let src = try makeSource(root)
        let (_, kid, size) = try keg.putWithArchive(directory: src)
        let reader = try ObjectReader(keg: keg, kid: kid)
        XCTAssertEqual(reader.kind, .treeArchive)
        var whole: [UInt8] = []
        try reader.forEachPiece { whole += $0 }
        XCTAssertEqual(KID(hashing: whole), kid)
        var seed: UInt64 = 7
        for _ in 0..<200 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            let start = (seed >> 20) % size
            let length = Int((seed >> 5) % 70_000) + 1
            let piece = try reader.read(at: start, maxLength: length)
            let end = min(size, start + UInt64(length))
            XCTAssertEqual(Array(piece), Array(whole[Int(start)..<Int(end)]), "range \(start)..<\(end)")
        }
        XCTAssertTrue(try reader.read(at: size, maxLength: 10).isEmpty)
        XCTAssertEqual(Array(try reader.read(at: size - 1, maxLength: 10)), [0])
    }

    /// The hash made beside the ingest must be of the bytes the tree makes:
    /// a file that differs from what the ingest read, or is gone, is refused.
    func testAFileThatChangedWhileItWasStoredIsRefused() throws {
        let (keg, root) = try makeKeg(self)
        let src = try makeSource(root)
        let tree = try keg.put(path: src)
        let made = try TreeArchive(tree: tree, keg: keg)
        let fd = open(src, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        XCTAssertTrue(made.matches(made, files: try made.digest(root: fd, name: src).files))
        XCTAssertEqual(try made.digest(root: fd, name: src).kid, try keg.putArchive(of: tree).kid)
        try write(Array("hullo\n".utf8), to: src + "/hello.txt")
        XCTAssertFalse(made.matches(made, files: try made.digest(root: fd, name: src).files), "same size, other bytes")
        try write(Array("hello\n!".utf8), to: src + "/hello.txt")
        assertKbuildError(.conflict, containing: "hello.txt: it changed while it was stored") { try made.digest(root: fd, name: src) }
        XCTAssertEqual(unlink(src + "/hello.txt"), 0)
        assertKbuildError(.conflict, containing: "hello.txt: it changed while it was stored") { try made.digest(root: fd, name: src) }
        // A symlink in its place is not followed.
        XCTAssertEqual(symlink("/etc/passwd", src + "/hello.txt"), 0)
        assertKbuildError(.conflict, containing: "hello.txt: it changed while it was stored") { try made.digest(root: fd, name: src) }
        assertKbuildError(.invalidArgument, containing: "not a directory") { try keg.putWithArchive(directory: src + "/a/big.bin") }
    }

    /// Files the put proves unchanged by their stat (here: all of them) make
    /// the same archive; one changed between the walk and the end, or swapped
    /// for another file while the ingest read it, is refused.
    func testSettledFilesAreProvedUnchangedByTheirStat() throws {
        let (keg, root) = try makeKeg(self)
        let src = try makeSource(root)
        let fd = open(src, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        XCTAssertTrue(Ingest.finelyTimed(fd), "this test needs a filesystem with fine timestamps (ext4, xfs, btrfs, tmpfs, overlayfs)")
        let all = ArchiveChecks(settledAge: -3600)
        let (tree, kid, _) = try keg.putWithArchive(directory: src, checks: all)
        XCTAssertEqual(try keg.putArchive(of: tree).kid, kid)
        var grown = all
        grown.beforeCheck = { _ = try? write(Array("hello\n!".utf8), to: src + "/hello.txt") }
        assertKbuildError(.conflict, containing: "hello.txt changed while it was stored") { try keg.putWithArchive(directory: src, checks: grown) }
        // Another file in its place while the ingest and the hash read, the first one back before the end.
        var swapped = all
        swapped.beforeIngest = {
            rename(src + "/hello.txt", src + "/hello.orig")
            _ = try? write(Array("HELLO\n".utf8), to: src + "/hello.txt")
        }
        swapped.beforeCheck = { rename(src + "/hello.orig", src + "/hello.txt") }
        assertKbuildError(.conflict, containing: "changed while it was stored") { try keg.putWithArchive(directory: src, checks: swapped) }
        XCTAssertTrue(try keg.fsck().isClean)
    }

    func testGCKeepsTheTreeOfAKeptArchiveAndFsckChecksIt() throws {
        let (keg, root) = try makeKeg(self)
        let src = try makeSource(root)
        let (tree, kid, _) = try keg.putWithArchive(directory: src)
        XCTAssertTrue(try keg.fsck().isClean)
        _ = try keg.gc(roots: [kid], grace: 0)
        XCTAssertTrue(keg.contains(tree), "the archive's tree is kept with it")
        XCTAssertEqual(try keg.putArchive(of: tree).kid, kid)
        XCTAssertTrue(try keg.fsck().isClean)
        _ = try keg.gc(roots: [], grace: 0)
        XCTAssertFalse(keg.contains(kid))
        XCTAssertFalse(keg.contains(tree))
        XCTAssertTrue(try keg.fsck().isClean)
    }
}
