import KbuildCore
public import Foundation

/// When an add-on's backups are taken on their own (`pg:backups:schedule
/// --at 02:00 [--keep N]`): daily at a time of day in a time zone (UTC unless
/// named), the newest `keep` scheduled backups kept. The decisions are pure:
/// `BackupScheduleService` asks them and takes the backups.
public struct BackupSchedule: Codable, Sendable, Equatable {
    /// Minutes after midnight, 0..<1440.
    public var minute: Int
    /// An IANA zone name (`UTC`, `Europe/Paris`).
    public var timeZone: String
    /// How many scheduled backups to keep (nil: all).
    public var keep: Int?
    /// When the schedule was set: a time of day before it, that day, is not owed.
    public var since: Date
    /// When the scheduler last began a backup for it (written before the backup starts, so a backup that cannot even
    /// be recorded is not retried every pass).
    public var lastRun: Date?

    public static let maximumKeep = 1000

    public init(minute: Int, timeZone: String, keep: Int?, since: Date) {
        self.minute = minute
        self.timeZone = timeZone
        self.keep = keep
        self.since = since
    }

    /// Reads `HH:MM` or `HH:MM ZONE` (`02:00`, `2:30 Europe/Paris`, `23:59 UTC`).
    public init(parsing text: String, keep: Int?, since: Date) throws {
        let bad = { (why: String) in
            KbuildError(.invalidArgument, "invalid backup schedule \(text.debugQuoted): \(why) (want HH:MM, optionally followed by a time zone such as UTC or Europe/Paris)")
        }
        let words = text.split(separator: " ", omittingEmptySubsequences: true)
        guard (1...2).contains(words.count) else { throw bad("one time of day and at most one zone") }
        let parts = words[0].split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...2).contains(parts[0].count), parts[1].count == 2,
              parts.allSatisfy({ $0.utf8.allSatisfy { (0x30...0x39).contains($0) } }),
              let hour = Int(parts[0]), let minute = Int(parts[1]) else { throw bad("not a time of day") }
        guard hour < 24, minute < 60 else { throw bad("no such time of day") }
        let zone = words.count == 2 ? String(words[1]) : "UTC"
        guard TimeZone(identifier: zone) != nil else { throw bad("unknown time zone \(zone.debugQuoted)") }
        if let keep, !(1...Self.maximumKeep).contains(keep) {
            throw KbuildError(.invalidArgument, "invalid --keep \(keep): keep 1 to \(Self.maximumKeep) scheduled backups")
        }
        self.init(minute: hour * 60 + minute, timeZone: zone, keep: keep, since: since)
    }

    /// `02:00 UTC`.
    public var description: String { String(format: "%02d:%02d", minute / 60, minute % 60) + " " + timeZone }

    /// The latest time at or before `now` that is this schedule's time of day in its zone (wall-clock time: across a
    /// DST change it stays at the same hour; a time the change skips is taken as the calendar resolves it, an hour on).
    public func lastOccurrence(atOrBefore now: Date) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: timeZone) ?? TimeZone(identifier: "UTC")!
        func occurrence(on day: Date) -> Date {
            var parts = calendar.dateComponents([.year, .month, .day], from: day)
            parts.hour = minute / 60
            parts.minute = minute % 60
            return calendar.date(from: parts) ?? day
        }
        let today = occurrence(on: now)
        if today <= now { return today }
        let yesterday = calendar.date(byAdding: .day, value: -1, to: calendar.startOfDay(for: now)) ?? now.addingTimeInterval(-86400)
        return occurrence(on: yesterday)
    }

    /// Whether a scheduled backup is owed at `now`: the last occurrence came
    /// after the schedule was set (to the minute) and after the last scheduled
    /// backup started. One missed while kbuild was down is taken when it is
    /// back, once, however many days it missed.
    public func isDue(at now: Date) -> Bool { isDue(at: now, lastScheduled: lastRun) }

    public func isDue(at now: Date, lastScheduled: Date?) -> Bool {
        let occurrence = lastOccurrence(atOrBefore: now)
        let setMinute = Date(timeIntervalSince1970: (since.timeIntervalSince1970 / 60).rounded(.down) * 60)
        guard occurrence >= setMinute else { return false }
        guard let lastScheduled else { return true }
        return lastScheduled < occurrence
    }

    /// The scheduled backups that retention deletes: those older than the
    /// `keep`-th newest verified scheduled one. Failed ones newer than that
    /// stay (they say what went wrong); backups taken by hand, imported or
    /// made by an upgrade are never deleted by a schedule.
    public static func expired(_ backups: [BackupRecord], keep: Int?) -> [BackupRecord] {
        guard let keep else { return [] }
        let scheduled = backups.filter { $0.source == BackupRecord.Source.schedule }
            .sorted { (BackupRecord.number($0.id) ?? 0) > (BackupRecord.number($1.id) ?? 0) }
        let verified = scheduled.filter { $0.state == .verified }
        guard verified.count > keep else { return [] }
        let oldestKept = BackupRecord.number(verified[keep - 1].id) ?? 0
        return scheduled.filter { (BackupRecord.number($0.id) ?? 0) < oldestKept }
    }
}
