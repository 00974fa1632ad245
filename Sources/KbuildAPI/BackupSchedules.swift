import Foundation
import KbuildCore
import KbuildState

/// Daily backups (`pg:backups:schedule`): the schedule in the add-on's record, and the scheduler's pass.
extension APIRoutes {
    func setSchedule(_ addon: AddonRecord, _ schedule: BackupSchedule?, actor: String) async throws -> API.AddonInfo {
        let updated = try await refs.update(try Schema.addon(addon.name), as: AddonRecord.self, in: keg, what: "add-on", actor: actor) { old in
            guard var a = old else { throw KbuildError(.notFound, "add-on \(addon.name) was destroyed meanwhile") }
            a.schedule = schedule
            return a
        }
        return try await addonInfo(updated.record ?? addon)
    }

    /// The scheduler's pass (`BackupScheduleService`, every 20 s): each add-on
    /// whose schedule is due is backed up, one after another, then its
    /// retention applied. Returns what it did, for the log.
    public func takeScheduledBackups() async -> [String] {
        let now = Date()
        var done: [String] = []
        guard let addons = try? await addonRecords() else { return done }
        for addon in addons {
            guard let schedule = addon.schedule, schedule.isDue(at: now), !addonsBusy.contains(addon.name) else { continue }
            do {
                let b = try await addonsBusy.holding(addon.name, doing: "a scheduled backup") {
                    // Marked as run before it starts (once it holds the add-on): a backup that fails, or cannot even be
                    // recorded, waits for the next day.
                    try await refs.update(try Schema.addon(addon.name), as: AddonRecord.self, in: keg, what: "add-on", actor: "schedule") { old in
                        guard var a = old, a.schedule != nil else { throw KbuildError(.notFound, "its schedule was removed meanwhile") }
                        a.schedule?.lastRun = now
                        return a
                    }
                    return try await captureHeld(addon, source: BackupRecord.Source.schedule, actor: "schedule")
                }
                done.append("backup schedule: \(addon.name) \(b.id) \(b.state == .verified ? "verified" : "FAILED: \(b.error ?? "")")")
                for old in BackupSchedule.expired(try await backups(addon.name), keep: schedule.keep) {
                    try await deleteBackup(old, actor: "schedule")
                    done.append("backup schedule: \(addon.name) \(old.id) deleted (--keep \(schedule.keep ?? 0))")
                }
            } catch {
                done.append("backup schedule: \(addon.name): \(Self.reason(error))")
            }
        }
        return done
    }
}

