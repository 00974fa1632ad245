import XCTest
@testable import Keg
import KbuildCore

final class PutGetTests: XCTestCase {
    /// A tree with what restores get wrong: modes, symlinks (dangling, to dirs,
    /// a loop), empty files and dirs, non-UTF-8 names, a chunked file.
    func makeSource(_ root: URL) throws -> String {
        let src = root.appendingPathComponent("src").path
        let fm = FileManager.default
        try fm.createDirectory(atPath: src + "/sub/deeper", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: src + "/empty", withIntermediateDirectories: true)
        try write(Array("hello\n".utf8), to: src + "/hello.txt")
        try write(Array("#!/bin/sh\necho hi\n".utf8), to: src + "/sub/run.sh", mode: 0o755)
        try write([], to: src + "/sub/empty-file", mode: 0o600)
        try write(randomBytes(3 << 20, seed: 9), to: src + "/sub/deeper/big.bin")
        try write(Array(repeating: 7, count: 2 << 20), to: src + "/sub/compressible.bin")
        try fm.createSymbolicLink(atPath: src + "/link-to-hello", withDestinationPath: "hello.txt")
        try fm.createSymbolicLink(atPath: src + "/dangling", withDestinationPath: "/nonexistent/target")
        try fm.createSymbolicLink(atPath: src + "/sub/up", withDestinationPath: "..")
        try fm.createSymbolicLink(atPath: src + "/loop-a", withDestinationPath: "loop-b")
        try fm.createSymbolicLink(atPath: src + "/loop-b", withDestinationPath: "loop-a")
        let latin1: [UInt8] = Array((src + "/caf").utf8) + [0xe9]
        BytePath(bytes: latin1).withCString { p in
            let fd = open(p, O_CREAT | O_WRONLY, 0o640)
            XCTAssertGreaterThanOrEqual(fd, 0)
            close(fd)
        }
        XCTAssertEqual(chmod(src + "/sub/deeper", 0o750), 0)
        return src
    }

    func testPutThenGetRestoresBytesModesAndSymlinks() throws {
        let (keg, root) = try makeKeg(self)
        let src = try makeSource(root)
        let kid = try keg.put(path: src)
        XCTAssertEqual(try keg.kind(of: kid), .tree)
        let out = root.appendingPathComponent("out").path
        try keg.get(kid, to: out)
        XCTAssertEqual(listing(src), listing(out))
        let diff = try runTool("/usr/bin/diff", ["-r", "--no-dereference", src, out])
        XCTAssertEqual(diff.status, 0, diff.output)
        // The same tree read again gives the same KID.
        XCTAssertEqual(try keg.put(path: src), kid)
        XCTAssertTrue(try keg.fsck().isClean)
    }

    func testTreeKIDIgnoresReadOrderAndMtimes() throws {
        let (keg, root) = try makeKeg(self)
        let a = root.appendingPathComponent("a").path, b = root.appendingPathComponent("b").path
        for (dir, names) in [(a, ["x", "y", "z"]), (b, ["z", "x", "y"])] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for n in names { try write(Array(n.utf8), to: dir + "/" + n) }
        }
        var times = [timespec(tv_sec: 1, tv_nsec: 0), timespec(tv_sec: 1, tv_nsec: 0)]
        XCTAssertEqual(utimensat(AT_FDCWD, b + "/x", &times, 0), 0)
        XCTAssertEqual(try keg.put(path: a), try keg.put(path: b))
    }

    func testGetOfAFileAndOfAChunkedFile() throws {
        let (keg, root) = try makeKeg(self)
        let big = randomBytes(40 << 20, seed: 4)
        try write(big, to: root.appendingPathComponent("big").path)
        let kid = try keg.put(path: root.appendingPathComponent("big").path)
        XCTAssertEqual(kid, KID(hashing: big), "a file's KID is the SHA-256 of its bytes, chunked or not")
        XCTAssertEqual(try keg.kind(of: kid), .chunkedFile)
        try keg.get(kid, to: root.appendingPathComponent("copy").path)
        XCTAssertEqual(try Data(contentsOf: root.appendingPathComponent("copy")), Data(big))
        // Range reads cross chunk boundaries correctly.
        let reader = try ObjectReader(keg: keg, kid: kid)
        var got: [UInt8] = []
        try reader.forEachPiece(in: 1_000_000..<3_500_000) { got += $0 }
        XCTAssertEqual(got, Array(big[1_000_000..<3_500_000]))
    }

    func testGetNeverOverwrites() throws {
        let (keg, root) = try makeKeg(self)
        let kid = try keg.putBlob(Array("x".utf8))
        let dest = root.appendingPathComponent("exists").path
        try write(Array("keep me".utf8), to: dest)
        assertKbuildError(.conflict, containing: "already exists") { try keg.get(kid, to: dest) }
        assertKbuildError(.notFound, containing: "parent directory") { try keg.get(kid, to: root.appendingPathComponent("no/such/dir").path) }
        XCTAssertEqual(try String(contentsOfFile: dest, encoding: .utf8), "keep me")
    }

    func testPutRefusesDeviceNodesFifosAndSymlinkLoopsAndStoresNothing() throws {
        let (keg, root) = try makeKeg(self)
        assertKbuildError(.invalidArgument, containing: "character device") { try keg.put(path: "/dev/null") }

        let dir = root.appendingPathComponent("withfifo").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try write(Array("some content that would be stored".utf8), to: dir + "/a.txt")
        XCTAssertEqual(mkfifo(dir + "/pipe", 0o644), 0)
        assertKbuildError(.invalidArgument, containing: "pipe: it is a fifo") { try keg.put(path: dir) }
        XCTAssertEqual(try keg.stats().objects, 0, "a failed put commits nothing")
        XCTAssertEqual(try keg.stats().tmpFiles, 0, "a failed put leaves no temporary files")

        let loop = root.appendingPathComponent("loop").path
        try FileManager.default.createSymbolicLink(atPath: loop, withDestinationPath: loop)
        assertKbuildError(.io, containing: "ELOOP") { try keg.put(path: loop) }
        assertKbuildError(.io, containing: "ENOENT") { try keg.put(path: root.appendingPathComponent("nope").path) }
    }

    func testCorruptObjectIsDetectedOnReadAndByFsck() throws {
        let (keg, root) = try makeKeg(self)
        let bytes = Array(repeating: UInt8(ascii: "k"), count: 10_000)
        let kid = try keg.putBlob(bytes)
        let path = keg.objectPath(kid)
        XCTAssertEqual(chmod(path, 0o644), 0)
        var stored = try Data(contentsOf: URL(fileURLWithPath: path))
        stored[stored.count - 3] ^= 0x55
        try stored.write(to: URL(fileURLWithPath: path))
        assertKbuildError(.corrupt, containing: kid.description) { try keg.get(kid, to: root.appendingPathComponent("o").path) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent("o").path), "nothing half-written")
        let report = try keg.fsck()
        XCTAssertEqual(report.problems.count, 1)
        XCTAssertEqual(report.problems.first?.kind, .corrupt)
        XCTAssertEqual(report.problems.first?.kid, kid)
        XCTAssertTrue(report.problems.first?.detail.contains(path) ?? false, "fsck names the file")
    }

    func testMissingChunkIsReportedByFsck() throws {
        let (keg, root) = try makeKeg(self)
        let data = randomBytes(4 << 20, seed: 5)
        try write(data, to: root.appendingPathComponent("f").path)
        let kid = try keg.put(path: root.appendingPathComponent("f").path)
        let chunk = try keg.chunks(ofChunkedFile: kid)[1].kid
        try removeObject(keg, chunk)
        let report = try keg.fsck()
        XCTAssertTrue(report.problems.contains { $0.kind == .missing && $0.kid == chunk }, "\(report.problems)")
        assertKbuildError(.notFound, containing: chunk.description) { try keg.get(kid, to: root.appendingPathComponent("o").path) }
    }

    func testPrefixResolution() throws {
        let (keg, _) = try makeKeg(self)
        let kid = try keg.putBlob(Array("prefix".utf8))
        XCTAssertEqual(try keg.resolve(KIDPrefix(parsing: String(kid.description.prefix(10)))), kid)
        assertKbuildError(.notFound, containing: "no object has this prefix") { try keg.resolve(KIDPrefix(parsing: "K-00000000")) }
        // Two objects whose names share 8 digits: plant two object files by name.
        let fan = keg.objectsPath + "/de"
        mkdir(fan, 0o755)
        for tail in ["adbeef" + String(repeating: "0", count: 56), "adbeef" + String(repeating: "1", count: 56)] {
            try write([], to: fan + "/" + tail)
        }
        assertKbuildError(.ambiguous, containing: "matches 2 objects") { try keg.resolve(KIDPrefix(parsing: "K-deadbeef")) }
        XCTAssertNoThrow(try keg.resolve(KIDPrefix(parsing: "K-deadbeef1")))
    }

    func testCheckoutHardLinksIntoTheSharedReadOnlyCache() throws {
        let (keg, root) = try makeKeg(self)
        let src = try makeSource(root)
        let kid = try keg.put(path: src)
        let one = root.appendingPathComponent("co1").path, two = root.appendingPathComponent("co2").path
        try keg.checkout(kid, to: one)
        try keg.checkout(kid, to: two)
        XCTAssertEqual(try runTool("/usr/bin/diff", ["-r", "--no-dereference", src, one]).status, 0)
        var a = stat(), b = stat()
        XCTAssertEqual(stat(one + "/sub/deeper/big.bin", &a), 0)
        XCTAssertEqual(stat(two + "/sub/deeper/big.bin", &b), 0)
        XCTAssertEqual(a.st_ino, b.st_ino, "two checkouts share one inode: no bytes copied")
        XCTAssertGreaterThanOrEqual(a.st_nlink, 3)
        XCTAssertEqual(a.st_mode & 0o222, 0, "cache files are read-only")
        XCTAssertEqual(stat(one + "/sub/run.sh", &a), 0)
        XCTAssertEqual(a.st_mode & 0o777, 0o555, "exec bits kept, write bits dropped")
        assertKbuildError(.invalidArgument, containing: "not a tree") { try keg.checkout(try keg.putBlob([1]), to: root.appendingPathComponent("x").path) }
    }
}
