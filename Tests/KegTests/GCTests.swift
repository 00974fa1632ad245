import XCTest
@testable import Keg
import CKbuild
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

final class ReviewRegressionTests: XCTestCase {
    /// One KID can be a file's bytes and a tree's: readers go by where it was named.
    func testAFileWhoseBytesEqualATreeEncodingRestoresAndSurvivesGC() throws {
        let (keg, root) = try makeKeg(self)
        let emptyTree = try Tree(entries: []).encoded()
        for order in ["dir-first", "file-first"] {
            let src = root.appendingPathComponent(order).path
            try FileManager.default.createDirectory(atPath: src + "/empty", withIntermediateDirectories: true)
            try write(emptyTree, to: src + "/looks-like-a-tree")
            if order == "file-first" {
                // Store the bytes as a plain file before any tree with an empty directory exists.
                let (k2, r2) = try makeKeg(self)
                XCTAssertEqual(try k2.put(path: src + "/looks-like-a-tree"), KID(hashing: emptyTree))
                let kid = try k2.put(path: src)
                try k2.get(kid, to: r2.appendingPathComponent("out").path)
                XCTAssertEqual(try runTool("/usr/bin/diff", ["-r", src, r2.appendingPathComponent("out").path]).status, 0)
                XCTAssertEqual(try k2.gc(roots: [kid], grace: 0).deleted, 0)
                continue
            }
            let kid = try keg.put(path: src)
            let out = root.appendingPathComponent("out-\(order)").path
            try keg.get(kid, to: out)
            XCTAssertEqual(try runTool("/usr/bin/diff", ["-r", src, out]).status, 0)
        }
    }

    /// A young object keeps what it names: an old pack's file record and
    /// chunks stay while a young tree (another pack) names the file.
    func testGCKeepsTheChunksOfAYoungFileRecord() throws {
        let (keg, root) = try makeKeg(self)
        let data = randomBytes(3 << 20, seed: 21)
        try write(data, to: root.appendingPathComponent("f").path)
        let kid = try keg.put(path: root.appendingPathComponent("f").path)
        ageEverything(keg)
        // A tree naming the old file, written on its own (no dedup check freshens the old pack).
        let tree = try Tree(entries: [.file("f", kid: kid, size: UInt64(data.count))])
        let writer = keg.writer()
        try keg.stage(KID(hashing: tree.encoded()), tree: tree, bytes: tree.encoded(), in: writer)
        try writer.commit()
        let report = try keg.gc(roots: [], grace: 3600)
        XCTAssertEqual(report.deleted, 0)
        try keg.get(kid, to: root.appendingPathComponent("out").path)
        XCTAssertEqual(try Data(contentsOf: root.appendingPathComponent("out")), Data(data))
        // And once nothing young names it, it goes.
        ageEverything(keg)
        XCTAssertGreaterThan(try keg.gc(roots: [], grace: 3600).deleted, 0)
        XCTAssertFalse(keg.contains(kid))
    }

    /// Many old packs are merged into one, reachable objects only, each once.
    func testGCMergesManyPacksIntoOne() throws {
        let (keg, root) = try makeKeg(self)
        var kept: [KID] = []
        for i in 0..<(Keg.packsToMerge + 4) {
            let dir = root.appendingPathComponent("p\(i)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try write(randomBytes(50_000, seed: UInt64(i) * 2 + 1), to: dir + "/own")
            try write(Array("shared by all".utf8), to: dir + "/shared")
            kept.append(try keg.put(path: dir))
        }
        let dropped = try keg.putBlob(Array("loose and unreachable".utf8))
        XCTAssertEqual(keg.packs.all.count, Keg.packsToMerge + 4)
        ageEverything(keg)
        let report = try keg.gc(roots: Set(kept), grace: 3600)
        XCTAssertEqual(report.packsRewritten, Keg.packsToMerge + 4)
        XCTAssertEqual(keg.packs.all.count, 1)
        XCTAssertEqual(keg.packs.all.first?.count, kept.count * 2 + 1, "each tree and its own file, and the shared file once")
        XCTAssertFalse(keg.contains(dropped))
        for (i, tree) in kept.enumerated() {
            try keg.get(tree, to: root.appendingPathComponent("out\(i)").path)
        }
        XCTAssertTrue(try keg.fsck().isClean)
        // Below the threshold, fully reachable packs are left alone.
        ageEverything(keg)
        XCTAssertEqual(try keg.gc(roots: Set(kept), grace: 3600).packsRewritten, 0)
    }

    /// A pack partly reachable is rewritten with what is reachable; the rest goes.
    func testGCRewritesAPartlyReachablePack() throws {
        let (keg, root) = try makeKeg(self)
        let dir = root.appendingPathComponent("d").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try write(randomBytes(2 << 20, seed: 31), to: dir + "/kept")
        try write(randomBytes(2 << 20, seed: 32), to: dir + "/dropped")
        let tree = try keg.put(path: dir)
        let entries = try keg.tree(tree).entries
        let kept = entries.first { $0.nameString == "kept" }!.kid!, dropped = entries.first { $0.nameString == "dropped" }!.kid!
        XCTAssertEqual(keg.packs.all.count, 1, "one put, one pack")
        ageEverything(keg)
        let report = try keg.gc(roots: [kept], grace: 3600)
        XCTAssertGreaterThan(report.deleted, 0)
        XCTAssertTrue(keg.contains(kept))
        XCTAssertFalse(keg.contains(dropped))
        XCTAssertFalse(keg.contains(tree))
        XCTAssertEqual(keg.packs.all.count, 1, "rewritten into one new pack")
        try keg.get(kept, to: root.appendingPathComponent("out").path)
        XCTAssertEqual(try runTool("/usr/bin/cmp", [dir + "/kept", root.appendingPathComponent("out").path]).status, 0)
        XCTAssertTrue(try keg.fsck().isClean)
    }

    func testADamagedCacheFileIsReplaced() throws {
        let (keg, root) = try makeKeg(self)
        let src = root.appendingPathComponent("src").path
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        try write(Array("cached content\n".utf8), to: src + "/a")
        let kid = try keg.put(path: src)
        try keg.checkout(kid, to: root.appendingPathComponent("c1").path)
        let cache = try keg.cachedFile(KID(hashing: Array("cached content\n".utf8)), mode: 0o644)
        XCTAssertEqual(root.appendingPathComponent("c1").path.isEmpty, false)
        // Cut the cache file short, as a crash before its data reached disk could.
        XCTAssertEqual(cache.withCString { unlink($0) }, 0)
        try write([], to: cache.description, mode: 0o444)
        try keg.checkout(kid, to: root.appendingPathComponent("c2").path)
        XCTAssertEqual(try String(contentsOfFile: root.appendingPathComponent("c2/a").path, encoding: .utf8), "cached content\n")
    }

    func testPutFollowsASymlinkGivenAsThePath() throws {
        let (keg, root) = try makeKeg(self)
        try write(Array("target".utf8), to: root.appendingPathComponent("t").path)
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("l").path, withDestinationPath: "t")
        XCTAssertEqual(try keg.put(path: root.appendingPathComponent("l").path), KID(hashing: Array("target".utf8)))
    }
}

final class OpenBeneathTests: XCTestCase {
    /// Files of a walked tree are opened beneath its root with no symlink in
    /// any component, so a directory swapped for a symlink mid-put leads nowhere.
    func testOpenBeneathRefusesSymlinksAndDotDot() throws {
        let (_, root) = try makeKeg(self)
        let dir = root.appendingPathComponent("tree").path
        try FileManager.default.createDirectory(atPath: dir + "/real", withIntermediateDirectories: true)
        try write(Array("inside".utf8), to: dir + "/real/file")
        try FileManager.default.createSymbolicLink(atPath: dir + "/swapped", withDestinationPath: "/etc")
        try FileManager.default.createSymbolicLink(atPath: dir + "/real/link", withDestinationPath: "file")
        let fd = open(dir, O_RDONLY | O_DIRECTORY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let ok = kb_open_beneath(fd, "real/file", O_RDONLY)
        XCTAssertGreaterThanOrEqual(ok, 0)
        close(ok)
        for bad in ["swapped/hostname", "real/link", "../tree/real/file", "/etc/hostname"] {
            let r = kb_open_beneath(fd, bad, O_RDONLY)
            XCTAssertLessThan(r, 0, "\(bad) must not open")
            if r >= 0 { close(r) }
        }
    }
}
