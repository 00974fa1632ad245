import XCTest
import KbuildCore

final class KIDTests: XCTestCase {
    func testKIDIsSHA256OfBytesAndFormats() throws {
        // sha256("abc"), FIPS 180-2 test vector.
        let kid = KID(hashing: Array("abc".utf8))
        XCTAssertEqual(kid.description, "K-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(kid.ociDigest, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(kid.short, "K-ba7816bf")
        XCTAssertEqual(try KID(parsing: kid.description), kid)
        XCTAssertEqual(try KID(parsing: kid.ociDigest), kid)
        XCTAssertEqual(KID(rawBytes: kid.rawBytes), kid)
        let json = try JSONEncoder().encode([kid])
        XCTAssertEqual(try JSONDecoder().decode([KID].self, from: json), [kid])
    }

    func testMalformedKIDsAreRefused() {
        for bad in ["", "K-", "K-abc", "K-" + String(repeating: "g", count: 64), "K-" + String(repeating: "A", count: 64),
                    "K-" + String(repeating: "a", count: 65), "sha512:" + String(repeating: "a", count: 64)] {
            assertKbuildError(.invalidArgument, containing: "failed to parse KID") { try KID(parsing: bad) }
        }
    }

    func testPrefixNeedsEightHexDigits() throws {
        XCTAssertEqual(try KIDPrefix(parsing: "K-0123abcd").hex, "0123abcd")
        XCTAssertEqual(try KIDPrefix(parsing: "0123abcdef").hex, "0123abcdef")
        XCTAssertNil(try KIDPrefix(parsing: "0123abcd").complete)
        for bad in ["K-0123abc", "xyz12345", "K-0123ABCD", ""] {
            assertKbuildError(.invalidArgument, containing: "8 to 64") { try KIDPrefix(parsing: bad) }
        }
    }
}
