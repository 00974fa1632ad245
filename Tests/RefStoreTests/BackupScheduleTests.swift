import XCTest
import KbuildState
import KbuildCore

/// The pure decisions of scheduled backups: what `--at` reads, when one is
/// owed, and which old ones `--keep` deletes.
final class BackupScheduleTests: XCTestCase {
    let utc = TimeZone(identifier: "UTC")!

    func date(_ text: String) -> Date {
        let f = ISO8601DateFormatter()
        return f.date(from: text)!
    }

    func testWhatAtReads() throws {
        let since = date("2026-12-07T10:00:00Z")
        let rows: [(String, Int, String)] = [("02:00", 120, "UTC"), ("2:30", 150, "UTC"), ("23:59 UTC", 1439, "UTC"),
                                             ("00:00 Europe/Paris", 0, "Europe/Paris"), ("  07:05   America/New_York ", 425, "America/New_York")]
        for (text, minute, zone) in rows {
            let s = try BackupSchedule(parsing: text, keep: 7, since: since)
            XCTAssertEqual(s.minute, minute, text)
            XCTAssertEqual(s.timeZone, zone, text)
            XCTAssertEqual(s.keep, 7)
        }
        XCTAssertEqual(try BackupSchedule(parsing: "2:05", keep: nil, since: since).description, "02:05 UTC")
        // Each bad one names what was wrong.
        let bad: [(String, Int?, String)] = [("", nil, "one time of day"), ("25:00", nil, "no such time of day"), ("12:60", nil, "no such time of day"),
                                             ("2am", nil, "not a time of day"), ("02:00:00", nil, "not a time of day"), ("0200", nil, "not a time of day"),
                                             ("02:0", nil, "not a time of day"), ("-1:00", nil, "not a time of day"), ("+2:00", nil, "not a time of day"),
                                             ("02:00 Mars/Olympus", nil, "unknown time zone \"Mars/Olympus\""), ("02:00 UTC extra", nil, "one time of day"),
                                             ("02:00", 0, "invalid --keep 0"), ("02:00", -3, "invalid --keep -3"), ("02:00", 1001, "invalid --keep 1001")]
        for (text, keep, message) in bad {
            XCTAssertThrowsError(try BackupSchedule(parsing: text, keep: keep, since: since), text) {
                XCTAssertTrue("\($0)".contains(message), "\(text): \($0)")
            }
        }
    }

    func testWhenOneIsOwed() throws {
        // Set at 10:00:30 for 02:00 UTC: nothing owed today; owed from 02:00 the next day, once.
        let at2 = BackupSchedule(minute: 120, timeZone: "UTC", keep: nil, since: date("2026-12-07T10:00:30Z"))
        let rows: [(now: String, last: String?, due: Bool)] = [
            ("2026-12-07T10:01:00Z", nil, false),            // 02:00 today came before it was set
            ("2026-12-08T01:59:59Z", nil, false),
            ("2026-12-08T02:00:00Z", nil, true),
            ("2026-12-08T02:00:20Z", "2026-12-08T02:00:05Z", false),  // taken at this occurrence
            ("2026-12-09T01:00:00Z", "2026-12-08T02:00:05Z", false),
            ("2026-12-09T02:00:01Z", "2026-12-08T02:00:05Z", true),
            ("2026-12-12T09:00:00Z", "2026-12-08T02:00:05Z", true),   // days missed while down: one, now
            ("2026-12-12T09:00:20Z", "2026-12-12T09:00:01Z", false),
        ]
        for row in rows {
            XCTAssertEqual(at2.isDue(at: date(row.now), lastScheduled: row.last.map(date)), row.due, "\(row)")
        }
        // Set for the current minute: owed at once (to the minute), as a user who sets it for "now" expects.
        let now = BackupSchedule(minute: 10 * 60 + 0, timeZone: "UTC", keep: nil, since: date("2026-12-07T10:00:40Z"))
        XCTAssertTrue(now.isDue(at: date("2026-12-07T10:00:45Z"), lastScheduled: nil))
        // In a zone: 02:00 in Paris is 01:00 UTC in December.
        let paris = BackupSchedule(minute: 120, timeZone: "Europe/Paris", keep: nil, since: date("2026-12-07T10:00:00Z"))
        XCTAssertEqual(paris.lastOccurrence(atOrBefore: date("2026-12-08T01:30:00Z")), date("2026-12-08T01:00:00Z"))
        XCTAssertEqual(paris.lastOccurrence(atOrBefore: date("2026-12-08T00:59:00Z")), date("2026-12-07T01:00:00Z"))
        XCTAssertFalse(paris.isDue(at: date("2026-12-08T00:59:00Z"), lastScheduled: nil))
        XCTAssertTrue(paris.isDue(at: date("2026-12-08T01:00:00Z"), lastScheduled: nil))
        // Across DST changes the wall-clock time holds: 05:00 in Paris is 03:00 UTC on 29 March 2026 (summer time began
        // at 02:00 that night) and 04:00 UTC on 25 October (it ended at 03:00).
        let five = BackupSchedule(minute: 300, timeZone: "Europe/Paris", keep: nil, since: date("2026-01-01T00:00:00Z"))
        XCTAssertEqual(five.lastOccurrence(atOrBefore: date("2026-03-29T12:00:00Z")), date("2026-03-29T03:00:00Z"))
        XCTAssertEqual(five.lastOccurrence(atOrBefore: date("2026-03-28T12:00:00Z")), date("2026-03-28T04:00:00Z"))
        XCTAssertEqual(five.lastOccurrence(atOrBefore: date("2026-10-25T12:00:00Z")), date("2026-10-25T04:00:00Z"))
        XCTAssertEqual(five.lastOccurrence(atOrBefore: date("2026-10-24T12:00:00Z")), date("2026-10-24T03:00:00Z"))
        XCTAssertEqual(five.lastOccurrence(atOrBefore: date("2026-03-29T02:59:00Z")), date("2026-03-28T04:00:00Z"))
        // The scheduler's own mark: a run it began counts, whatever became of its backup.
        var marked = at2
        marked.lastRun = date("2026-12-08T02:00:01Z")
        XCTAssertFalse(marked.isDue(at: date("2026-12-08T02:00:30Z")))
        XCTAssertTrue(marked.isDue(at: date("2026-12-09T02:00:00Z")))
    }

    func testWhatKeepDeletes() throws {
        func b(_ n: Int, _ source: String, _ state: BackupRecord.State) -> BackupRecord {
            BackupRecord(id: BackupRecord.id(n), addon: "a-postgres", addonKind: .postgres, version: "17", dump: nil, size: 0, databaseSize: nil,
                         state: state, error: nil, source: source, createdBy: "t", createdAt: Date(timeIntervalSince1970: Double(n) * 86400))
        }
        let all = [b(1, "schedule", .verified), b(2, "capture", .verified), b(3, "schedule", .failed), b(4, "schedule", .verified),
                   b(5, "import", .verified), b(6, "schedule", .verified), b(7, "schedule", .failed)]
        let rows: [(Int?, [String])] = [
            (nil, []),
            (5, []),                      // three verified scheduled ones: all kept
            (3, []),
            (2, ["b001", "b003"]),        // keeps b006 and b004; b007 (failed, newer) stays to say why
            (1, ["b001", "b003", "b004"]), // never b002 (by hand) or b005 (imported)
        ]
        for (keep, expired) in rows {
            XCTAssertEqual(BackupSchedule.expired(all, keep: keep).map(\.id).sorted(), expired, "keep \(keep.map(String.init) ?? "all")")
        }
        // Only failed scheduled ones: none deleted (there is no verified one to keep instead).
        XCTAssertEqual(BackupSchedule.expired([b(1, "schedule", .failed), b(2, "schedule", .failed)], keep: 1), [])
    }
}
