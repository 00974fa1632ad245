import XCTest
import KbuildState
import KbuildCore

final class RefNameTests: XCTestCase {
    func testGoodNames() throws {
        for good in ["apps/web/release", "nodes/n1/assignment", "builds/queue/0001", "pins/K-abc", "a", "x.y_z-1+2@3:4"] {
            XCTAssertEqual(try RefName(good).rawValue, good)
        }
        XCTAssertNoThrow(try RefName(String(repeating: "a/", count: 511) + "b")) // 1,023 bytes
    }

    func testBadNamesSayWhatIsWrong() {
        let cases: [(String, String)] = [
            ("", "empty"),
            ("apps/../etc", "segment . or .."),
            ("..", "segment . or .."),
            ("apps/./x", "segment . or .."),
            ("/etc/passwd", "absolute path"),
            ("apps/web/", "must not end with /"),
            ("apps//web", "empty segment"),
            ("apps/we\u{0}b", "contains NUL"),
            ("apps/we\u{1b}b", "control character 0x1b"),
            ("apps/we\nb", "control character 0xa"),
            ("apps/web b", "is not allowed"),
            (String(repeating: "a", count: 1025), "1025 bytes, at most 1024"),
            (String(repeating: "a/", count: 600) + "b", "at most 1024"),
        ]
        for (name, why) in cases {
            XCTAssertThrowsError(try RefName(name), name.debugQuoted) { error in
                guard let e = error as? KbuildError else { return XCTFail("\(error)") }
                XCTAssertEqual(e.code, .invalidArgument)
                XCTAssertTrue(e.message.contains(why), "\(e.message) lacks \(why)")
                XCTAssertTrue(e.message.hasPrefix("failed to parse ref name"), e.message)
            }
        }
    }

    func testIsUnderRespectsSegments() throws {
        XCTAssertTrue(try RefName("apps/web/release").isUnder(RefName("apps/web")))
        XCTAssertFalse(try RefName("apps/web2/release").isUnder(RefName("apps/web")))
        XCTAssertTrue(try RefName("apps").isUnder(RefName("apps")))
    }
}
