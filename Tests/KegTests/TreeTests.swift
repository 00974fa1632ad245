import XCTest
@testable import Keg
import KbuildCore

final class TreeTests: XCTestCase {
    let a = KID(hashing: Array("a".utf8)), b = KID(hashing: Array("b".utf8))

    func testSameEntriesInAnyOrderHaveOneEncoding() throws {
        let entries: [Tree.Entry] = [.file("z", kid: a, size: 1), .directory("m", kid: b), .symlink("a", target: "z"), .file("B", kid: b, size: 1, mode: 0o755)]
        let one = try Tree(entries: entries).encoded()
        let two = try Tree(entries: entries.reversed()).encoded()
        XCTAssertEqual(one, two)
        XCTAssertEqual(KID(hashing: one), KID(hashing: two))
        let decoded = try Tree(decoding: one, kid: KID(hashing: one))
        XCTAssertEqual(decoded.entries.map(\.nameString), ["B", "a", "m", "z"])
        XCTAssertEqual(decoded.entries[1].targetString, "z")
        XCTAssertEqual(decoded.entries[0].mode, 0o755)
    }

    func testNamesThatAreNotOneComponentAreRefused() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assertKbuildError(.corrupt, containing: "single path component") { try Tree(entries: [.file(bad, kid: a, size: 1)]) }
        }
        assertKbuildError(.invalidArgument, containing: "duplicate") { try Tree(entries: [.file("x", kid: a, size: 1), .file("x", kid: b, size: 1)]) }
    }

    func testDecoderRefusesNonCanonicalOrCraftedTrees() throws {
        // Hand-build a tree whose entries are out of order: it must not decode.
        var bytes = Array("KTR1".utf8)
        bytes.appendLE(UInt32(2))
        for name in ["b", "a"] {
            bytes.append(1); bytes.appendLE(UInt32(0o644)); bytes.appendLE(UInt64(1))
            bytes.appendLE(UInt16(1)); bytes.append(contentsOf: Array(name.utf8)); a.appendRaw(to: &bytes)
        }
        assertKbuildError(.corrupt, containing: "out of order") { try Tree(decoding: bytes, kid: KID(hashing: bytes)) }

        var dotdot = Array("KTR1".utf8)
        dotdot.appendLE(UInt32(1))
        dotdot.append(1); dotdot.appendLE(UInt32(0o644)); dotdot.appendLE(UInt64(1))
        dotdot.appendLE(UInt16(2)); dotdot.append(contentsOf: Array("..".utf8)); a.appendRaw(to: &dotdot)
        assertKbuildError(.corrupt, containing: "single path component") { try Tree(decoding: dotdot, kid: KID(hashing: dotdot)) }

        let valid = try Tree(entries: [.file("ok", kid: a, size: 1)]).encoded()
        assertKbuildError(.corrupt, containing: "truncated") { try Tree(decoding: Array(valid.dropLast(5)), kid: a) }
    }
}
