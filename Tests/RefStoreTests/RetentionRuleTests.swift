import XCTest
import Foundation
import KbuildState
import KbuildCore

final class RetentionRuleTests: XCTestCase {
    func k(_ s: String) -> KID { KID(hashing: Array(s.utf8)) }

    /// A ref's history newest first: values v(n-1)...v0, one a day back from now.
    func history(_ name: String, count: Int, now: Date) throws -> (RefName, [RefChange]) {
        let ref = try RefName(name)
        let changes = (0..<count).reversed().map { i in
            RefChange(revision: Revision(Int64(i + 1)), name: ref, old: i == 0 ? nil : k("\(name)\(i - 1)"), new: k("\(name)\(i)"),
                      version: Int64(i + 1), time: now.addingTimeInterval(-Double(count - 1 - i) * 86400), actor: "t")
        }
        return (ref, changes)
    }

    func testTable() throws {
        let now = Date()
        struct Row { let name: String; let count: Int; let rule: RetentionRule; let kept: [Int]; let why: String }
        let rows: [Row] = [
            Row(name: "nodes/n1/assignment", count: 20, rule: .init(keepLast: 3, keepFor: 0, keepAllHistory: []), kept: [17, 18, 19], why: "last 3 only"),
            Row(name: "nodes/n1/assignment", count: 20, rule: .init(keepLast: 1, keepFor: 5 * 86400 + 1, keepAllHistory: []), kept: [14, 15, 16, 17, 18, 19], why: "the last 5 days"),
            Row(name: "apps/web/release", count: 20, rule: .default, kept: Array(0..<20), why: "rollback targets: all releases"),
            Row(name: "apps/web/config", count: 50, rule: .init(keepLast: 2, keepFor: 0, keepAllHistory: ["apps/*/release"]), kept: [48, 49], why: "* matches one segment only"),
            Row(name: "nodes/n1/status", count: 40, rule: .default, kept: Array(30..<40), why: "heartbeats: the last 10, however young"),
            Row(name: "pins/deep/name", count: 4, rule: .init(keepLast: 1, keepFor: 0, keepAllHistory: ["pins/**"]), kept: [0, 1, 2, 3], why: "** matches any depth"),
        ]
        for row in rows {
            let (ref, changes) = try history(row.name, count: row.count, now: now)
            let current = Ref(name: ref, kid: k("\(row.name)\(row.count - 1)"), revision: Revision(Int64(row.count)), version: Int64(row.count))
            let roots = row.rule.roots(current: [current], history: [ref: changes], now: now)
            let kept = (0..<row.count).filter { roots.contains(k("\(row.name)\($0)")) }
            // A kept change also keeps the value it replaced (the previous value).
            let expected = Set(row.kept + row.kept.map { $0 - 1 }.filter { $0 >= 0 }).sorted()
            XCTAssertEqual(kept, expected, row.why)
        }
    }
}
