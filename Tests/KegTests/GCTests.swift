import XCTest
@testable import Keg
import KbuildCore

final class GCTests: XCTestCase {
    func testGCKeepsReachableAndInUseAndYoungDeletesTheRest() throws {
        let (keg, root) = try makeKeg(self)
        func tree(_ name: String, _ seed: UInt64) throws -> KID {
            let dir = root.appendingPathComponent(name).path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try write(randomBytes(2 << 20, seed: seed), to: dir + "/big")
            try write(Array(name.utf8), to: dir + "/small")
            return try keg.put(path: dir)
        }
        let kept = try tree("kept", 1), dropped = try tree("dropped", 2), inUse = try tree("inuse", 3)
        try keg.checkout(inUse, to: root.appendingPathComponent("running").path)
        let inUseBig = try keg.tree(inUse).entries.first { $0.nameString == "big" }!.kid!

        // Everything is young: nothing goes.
        let young = try keg.gc(roots: [kept], grace: 3600)
        XCTAssertEqual(young.deleted, 0)
        XCTAssertGreaterThan(young.keptYoung, 0)

        let dry = try keg.gc(roots: [kept], grace: 0, dryRun: true)
        XCTAssertGreaterThan(dry.deleted, 0)
        XCTAssertTrue(keg.contains(dropped), "a dry run deletes nothing")

        let report = try keg.gc(roots: [kept], grace: 0)
        XCTAssertFalse(keg.contains(dropped))
        XCTAssertTrue(keg.contains(kept))
        XCTAssertTrue(try keg.fsck().isClean, "gc never leaves a reachable object missing")
        try keg.get(kept, to: root.appendingPathComponent("restored").path)
        // The checkout's files are still linked: their objects stay.
        XCTAssertTrue(keg.contains(inUseBig), "an object a checkout uses is kept")
        XCTAssertEqual(try runTool("/usr/bin/cmp", [root.appendingPathComponent("inuse/big").path, root.appendingPathComponent("running/big").path]).status, 0)
        XCTAssertGreaterThan(report.deleted, 0)
    }

    func testGCSweepsStaleTemporaryFiles() throws {
        let (keg, _) = try makeKeg(self)
        try write([1, 2, 3], to: keg.tmpPath + "/12345-1-deadbeef")
        XCTAssertEqual(try keg.gc(roots: [], grace: 0).tmpFilesDeleted, 1)
    }

    func testAbortedWriterLeavesNothing() throws {
        let (keg, _) = try makeKeg(self)
        let w = keg.writer()
        let bytes = Array("never committed".utf8)
        try w.add(KID(hashing: bytes), kind: .blob, bytes: bytes, compressor: nil)
        w.abort()
        XCTAssertFalse(keg.contains(KID(hashing: bytes)))
        XCTAssertEqual(try keg.stats().tmpFiles, 0)
    }
}
