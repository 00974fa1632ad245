import XCTest
@testable import Keg
import KbuildCore

/// A file stored as it arrives (`KegUpload`) is the same object `put` makes.
final class UploadTests: XCTestCase {
    func testAnUploadIsStoredAsPutStoresTheFile() throws {
        let (keg, root) = try makeKeg(self)
        var rng: UInt64 = 7
        for size in [0, 100, (1 << 20) - 1, (1 << 20) + 5, 9 << 20, 21 << 20] {
            let data = randomBytes(size, seed: UInt64(size) + 1)
            let upload = KegUpload(keg: keg)
            var at = 0
            while at < data.count {
                rng = rng &* 6364136223846793005 &+ 1442695040888963407
                let n = min(data.count - at, Int(rng >> 40) % (3 << 20) + 1)
                try data[at..<at + n].withUnsafeBytes { try upload.append($0) }
                at += n
            }
            let kid = try upload.seal()
            XCTAssertEqual(kid, KID(hashing: data), "size \(size)")
            XCTAssertEqual(upload.size, UInt64(size))
            try upload.commit()
            // put of the same bytes finds every object already there, and reads back equal.
            let path = root.appendingPathComponent("f\(size)").path
            try write(data, to: path)
            XCTAssertEqual(try keg.put(path: path), kid)
            XCTAssertEqual(try keg.logicalSize(of: kid), UInt64(size))
            XCTAssertEqual(try keg.kind(of: kid), size < Keg.chunkingThreshold ? .blob : .chunkedFile)
            try keg.get(kid, to: path + ".out")
            XCTAssertEqual(try runTool("/usr/bin/cmp", [path, path + ".out"]).status, 0)
        }
        XCTAssertTrue(try keg.fsck().isClean)
    }

    func testAnAbortedUploadLeavesNothing() throws {
        let (keg, _) = try makeKeg(self)
        let data = randomBytes(12 << 20, seed: 99)
        let upload = KegUpload(keg: keg)
        try data.withUnsafeBytes { try upload.append($0) }
        let kid = try upload.seal()
        upload.abort()
        XCTAssertFalse(keg.contains(kid))
        XCTAssertEqual(keg.packs.all.count, 0)
        XCTAssertEqual(try keg.stagingFiles(), [], "the staged pack is gone")
    }
}

/// Packs written by another process (here: another `Keg` on the same
/// directory) are seen at once, however soon after the last look.
final class PackVisibilityTests: XCTestCase {
    func testAnotherWritersPackIsSeenAtOnce() throws {
        let (first, root) = try makeKeg(self)
        let second = try Keg(dataDir: first.dataDir)
        for round in 0..<20 {
            XCTAssertFalse(first.contains(KID(hashing: Array("nothing \(round)".utf8))))  // a look just before
            let dir = root.appendingPathComponent("d\(round)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try write(randomBytes(100_000, seed: UInt64(round)), to: dir + "/a")
            try write(Array("round \(round)".utf8), to: dir + "/b")
            let tree = try second.put(path: dir)
            XCTAssertTrue(first.contains(tree), "round \(round)")
            XCTAssertEqual(try first.tree(tree).entries.count, 2)
        }
    }
}
