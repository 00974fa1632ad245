import XCTest
@testable import Keg
import KbuildCore
import CKbuild

final class ChunkingTests: XCTestCase {
    func cuts(_ data: [UInt8]) -> [[UInt8]] {
        var params = Keg.chunkParams
        var out: [[UInt8]] = []
        var at = 0
        data.withUnsafeBufferPointer { buf in
            while at < data.count {
                let n = kb_cdc_cut(buf.baseAddress! + at, data.count - at, &params)
                out.append(Array(buf[at..<at + n]))
                at += n
            }
        }
        return out
    }

    func testChunkSizesStayWithinBounds() {
        let chunks = cuts(randomBytes(8 << 20, seed: 1))
        XCTAssertEqual(chunks.reduce(0) { $0 + $1.count }, 8 << 20)
        for c in chunks.dropLast() {
            XCTAssertGreaterThanOrEqual(c.count, Int(Keg.chunkParams.min_size))
            XCTAssertLessThanOrEqual(c.count, Int(Keg.chunkParams.max_size))
        }
        let average = (8 << 20) / chunks.count
        XCTAssertTrue((32 << 10)...(128 << 10) ~= average, "average chunk \(average)")
    }

    func testAnInsertionMovesOnlyTheChunksAroundIt() {
        let base = randomBytes(8 << 20, seed: 2)
        var edited = base
        edited.insert(contentsOf: Array("hello, insertion".utf8), at: 3 << 20)
        let before = Set(cuts(base).map { KID(hashing: $0) })
        let after = cuts(edited).map { KID(hashing: $0) }
        let new = after.filter { !before.contains($0) }
        XCTAssertLessThanOrEqual(new.count, 3, "an insertion should change 1-2 chunks, changed \(new.count) of \(after.count)")
    }

    func testIndexOfAnEditedFileSharesMostNodes() throws {
        let (keg, root) = try makeKeg(self)
        let file = root.appendingPathComponent("big").path
        var data = randomBytes(96 << 20, seed: 3)
        try write(data, to: file)
        let v1 = try keg.put(path: file)
        let before = try keg.stats()
        // Overwrite 64 KiB in one place and insert a few bytes in another.
        for i in 0..<(64 << 10) { data[(40 << 20) + i] ^= 0xff }
        data.insert(contentsOf: [1, 2, 3], at: 70 << 20)
        try FileManager.default.removeItem(atPath: file)
        try write(data, to: file)
        let v2 = try keg.put(path: file)
        XCTAssertNotEqual(v1, v2)
        let after = try keg.stats()
        let newIndex = (after.byKind[.chunkIndex]?.objects ?? 0) - (before.byKind[.chunkIndex]?.objects ?? 0)
        let newChunks = (after.byKind[.blob]?.objects ?? 0) - (before.byKind[.blob]?.objects ?? 0)
        let indexBytes = (after.byKind[.chunkIndex]?.stored ?? 0) - (before.byKind[.chunkIndex]?.stored ?? 0)
        XCTAssertLessThanOrEqual(newChunks, 6, "new chunks for two small edits")
        XCTAssertLessThanOrEqual(newIndex, 6, "new index nodes (of \(after.byKind[.chunkIndex]?.objects ?? 0))")
        XCTAssertLessThan(indexBytes, 20_000, "index bytes per version")
        // And both versions read back exactly.
        let out = root.appendingPathComponent("out2").path
        try keg.get(v2, to: out)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), Data(data))
    }
}

final class SHA256x2Tests: XCTestCase {
    /// The interleaved SHA-NI hash must equal swift-crypto's for every length
    /// and every way of splitting the input.
    func testInterleavedHashMatchesSwiftCrypto() throws {
        try XCTSkipUnless(kb_sha256_hw() == 1, "this CPU has no x86 SHA extensions; ingest uses swift-crypto")
        let data = randomBytes(300_000, seed: 11)
        var lengths = Array(0...130) + [255, 256, 257, 4095, 4096, 65_536, 65_537, 299_999]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 { lengths.append(Int.random(in: 0..<data.count, using: &rng)) }
        for length in lengths {
            let want = KID(hashing: Array(data[0..<length]))
            let other = KID(hashing: Array(data[7..<7 + min(length, data.count - 7) / 2]))
            var a = kb_sha256(), b = kb_sha256()
            kb_sha256_init(&a)
            kb_sha256_init(&b)
            var x = 0, y = 0
            let otherLength = min(length, data.count - 7) / 2
            data.withUnsafeBufferPointer { p in
                while x < length || y < otherLength {
                    let k1 = min(Int.random(in: 0..<9000, using: &rng), length - x)
                    let k2 = min(Int.random(in: 0..<9000, using: &rng), otherLength - y)
                    kb_sha256_update2(&a, p.baseAddress! + x, k1, &b, p.baseAddress! + 7 + y, k2)
                    x += k1
                    y += k2
                }
            }
            var da = [UInt8](repeating: 0, count: 32), db = da
            kb_sha256_final(&a, &da)
            kb_sha256_final(&b, &db)
            XCTAssertEqual(KID(rawBytes: da), want, "length \(length)")
            XCTAssertEqual(KID(rawBytes: db), other, "length \(otherLength)")
        }
    }
}
