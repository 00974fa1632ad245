import XCTest
import KbuildServer

final class ByteRangeTests: XCTestCase {
    func testTable() {
        let rows: [(String?, UInt64, ByteRangeRequest)] = [
            (nil, 100, .whole),
            ("bytes=0-9", 100, .partial(0..<10)),
            ("bytes=90-", 100, .partial(90..<100)),
            ("bytes=90-500", 100, .partial(90..<100)),
            ("bytes=-10", 100, .partial(90..<100)),
            ("bytes=-500", 100, .partial(0..<100)),
            ("bytes=100-", 100, .unsatisfiable),
            ("bytes=200-300", 100, .unsatisfiable),
            ("bytes=-0", 100, .unsatisfiable),
            ("bytes=0-", 0, .unsatisfiable),
            ("bytes=5-2", 100, .whole),
            ("bytes=0-1,5-6", 100, .whole),
            ("items=0-1", 100, .whole),
            ("bytes=a-b", 100, .whole),
        ]
        for (header, size, want) in rows {
            XCTAssertEqual(ByteRangeRequest.parse(header, size: size), want, "\(header ?? "nil") of \(size)")
        }
    }
}
