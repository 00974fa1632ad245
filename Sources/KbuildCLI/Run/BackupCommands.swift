import ArgumentParser
import Foundation
import KbuildClient
import KbuildCore
import KbuildState

// The backups of add-ons: `pg:backups*` and `redis:backups*` (BackupRoutes on the server).

/// `kbuild pg:backups APP [DATABASE]`.
struct PgBackups: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg:backups", abstract: "List the backups of an app's PostgreSQL add-on: verified, or the error.",
        discussion: "Each is a pg_dump stored in the Keg (custom format, uncompressed: successive backups share its chunks), counted only once a test restore of it into a scratch database succeeded.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let client = try global.client()
        let a = try await postgresAddon(client, app: app, name: database)
        let list = try await client.backups(app, addon: a.name)
        if json { return try printJSON(list) }
        if let s = a.schedule { say("Scheduled daily at \(s.description)\(s.keep.map { ", the newest \($0) kept" } ?? "")") }
        guard !list.isEmpty else { return say("\(a.name) has no backups (kbuild pg:backups:capture \(app))") }
        say("=== \(a.name) backups")
        for b in list.reversed() { say(PgBackups.line(b)) }
    }

    static func line(_ b: BackupRecord, unit: String? = nil) -> String {
        let what = b.state == .verified ? "verified" : "FAILED: \(b.error ?? "")"
        let size = b.databaseSize.map { n in unit.map { "\(n) \($0), " } ?? "database \(formatBytes(n)), " } ?? ""
        return "\(b.id)  \(shortDate(b.createdAt))  \(size)dump \(formatBytes(b.size))  \(what)  by \(b.createdBy) (\(b.source))"
    }
}

/// `kbuild pg:backups:capture APP [DATABASE]`.
struct PgBackupsCapture: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pg:backups:capture", abstract: "Back up an app's PostgreSQL add-on into the Keg, then test-restore it.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?

    func run() async throws {
        let client = try global.client()
        let a = try await postgresAddon(client, app: app, name: database)
        let b = try await client.captureBackup(app, addon: a.name)
        say(PgBackups.line(b))
        if b.state != .verified { throw ExitCode(1) }
        say("Dump \(b.dump?.description ?? "")")
    }
}

/// `kbuild pg:backups:restore APP BACKUP [DATABASE] --confirm ADDON`.
struct PgBackupsRestore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg:backups:restore", abstract: "Restore a verified backup over an app's PostgreSQL add-on (its tables replace those of the same names).",
        discussion: "Asks you to type the add-on's name; --confirm NAME answers in advance. In one transaction: a restore that fails (or waits over a minute for a lock the app holds) changes nothing. Tables made since the backup stay.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var target: BackupTarget

    func run() async throws {
        let (client, a) = try await target.resolve(global, warning: "This replaces the data of ADDON with backup \(target.backup).")
        let b = try await client.restoreBackup(target.app, addon: a.name, backup: target.backup)
        say("Restored \(b.id) (\(shortDate(b.createdAt))) into \(a.name)")
    }
}

/// `kbuild pg:backups:download APP BACKUP [DATABASE] [-o FILE]`.
struct PgBackupsDownload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg:backups:download", abstract: "Write a backup's dump to a file (pg_restore reads it; a Redis add-on's: its RDB snapshot).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The backup (b001, …).") var backup: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?
    @Option(name: .shortAndLong, help: "The file (default ADDON-BACKUP.dump).") var output: String?

    func run() async throws {
        let client = try global.client()
        // A named add-on of either kind (a Redis one's snapshots too); by default the app's PostgreSQL one.
        let a = database == nil ? try await postgresAddon(client, app: app, name: nil) : try await addonOf(nil, client, app: app, name: database)
        let path = output ?? "\(a.name)-\(backup).\(a.addon == .postgres ? "dump" : "rdb")"
        let response = try await client.downloadBackup(app, addon: a.name, backup: backup)
        // Whole or not at all: written beside it, renamed once complete.
        let temporary = path + ".part"
        guard FileManager.default.createFile(atPath: temporary, contents: nil), let file = FileHandle(forWritingAtPath: temporary) else {
            throw KbuildError(.io, "failed to write \(temporary)")
        }
        var written: UInt64 = 0
        do {
            for try await chunk in response.body {
                try file.write(contentsOf: Data(buffer: chunk))
                written += UInt64(chunk.readableBytes)
            }
            try file.synchronize()
            try file.close()
            guard rename(temporary, path) == 0 else { throw KbuildError.syscall("rename", path, verb: "write the dump") }
        } catch {
            try? file.close()
            unlink(temporary)
            throw error
        }
        say("Wrote \(formatBytes(written)) to \(path)")
    }
}

/// `kbuild pg:backups:import APP FILE [DATABASE]`.
struct PgBackupsImport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg:backups:import", abstract: "Store a pg_dump file (custom format: pg_dump -Fc) as a backup of an app's PostgreSQL add-on, test-restored.",
        discussion: "It becomes a backup like any other (verified only once its test restore succeeded); kbuild pg:backups:restore APP BACKUP loads it into the database.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The dump file.") var file: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?

    func run() async throws {
        // Checked here first, so a wrong file is not sent at all (the server checks again).
        guard let handle = FileHandle(forReadingAtPath: file) else { throw KbuildError(.notFound, "failed to open \(file): no such file, or not readable") }
        let head = try handle.read(upToCount: 5) ?? Data()
        try handle.close()
        guard head == Data("PGDMP".utf8) else {
            throw KbuildError(.invalidArgument, "\(file) is not a pg_dump custom-format file (it does not start with PGDMP): make it with pg_dump -Fc; nothing stored")
        }
        let client = try global.client()
        let a = try await postgresAddon(client, app: app, name: database)
        let b = try await client.importBackup(app, addon: a.name, file: file)
        say(PgBackups.line(b))
        if b.state != .verified { throw ExitCode(1) }
    }
}

/// `kbuild pg:backups:delete APP BACKUP [DATABASE] --confirm ADDON`.
struct PgBackupsDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg:backups:delete", abstract: "Delete a backup (its dump goes at the next keg gc).",
        discussion: "Asks you to type the add-on's name; --confirm NAME answers in advance.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var target: BackupTarget

    func run() async throws {
        let (client, a) = try await target.resolve(global, warning: "This deletes backup \(target.backup) of ADDON.")
        let b = try await client.deleteBackup(target.app, addon: a.name, backup: target.backup)
        say("Deleted \(b.id) of \(a.name)")
    }
}

/// `kbuild pg:backups:schedule APP [DATABASE] --at "02:00 [ZONE]" [--keep N]`.
struct PgBackupsSchedule: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg:backups:schedule", abstract: "Back up an app's PostgreSQL add-on daily (kbuild up takes them).",
        discussion: "--at is a time of day, HH:MM, in UTC or in the zone named after it (\"02:00 Europe/Paris\"). A backup missed while kbuild was down is taken when it is back. --keep N keeps the newest N verified scheduled backups and deletes the older scheduled ones; backups taken by hand or imported stay.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?
    @Option(help: "The time of day: HH:MM [ZONE].") var at: String
    @Option(help: "How many scheduled backups to keep (default: all).") var keep: Int?

    func run() async throws {
        _ = try BackupSchedule(parsing: at, keep: keep, since: Date())
        let client = try global.client()
        let a = try await postgresAddon(client, app: app, name: database)
        let info = try await client.setBackupSchedule(app, addon: a.name, API.BackupScheduleSet(at: at, keep: keep))
        let s = info.record.schedule
        say("Scheduled daily backups of \(a.name) at \(s?.description ?? at)\(keep.map { ", the newest \($0) kept" } ?? "")")
    }
}

/// `kbuild pg:backups:unschedule APP [DATABASE]`.
struct PgBackupsUnschedule: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pg:backups:unschedule", abstract: "Stop the daily backups of an app's PostgreSQL add-on (its backups stay).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?

    func run() async throws {
        let client = try global.client()
        let a = try await postgresAddon(client, app: app, name: database)
        _ = try await client.removeBackupSchedule(app, addon: a.name)
        say("Stopped the daily backups of \(a.name)")
    }
}

/// `kbuild redis:backups APP [NAME]`.
struct RedisBackups: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis:backups", abstract: "List the backups of an app's Redis add-on: verified, or the error.",
        discussion: "Each is an RDB snapshot stored in the Keg, counted only once redis-check-rdb loaded it whole. kbuild pg:backups:download reads them too.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The attachment or add-on (default REDIS).") var name: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let client = try global.client()
        let a = try await addonOf(.redis, client, app: app, name: name)
        let list = try await client.backups(app, addon: a.name)
        if json { return try printJSON(list) }
        guard !list.isEmpty else { return say("\(a.name) has no backups (kbuild redis:backups:capture \(app))") }
        say("=== \(a.name) backups")
        for b in list.reversed() { say(PgBackups.line(b, unit: "keys")) }
    }
}

/// `kbuild redis:backups:capture APP [NAME]`.
struct RedisBackupsCapture: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis:backups:capture", abstract: "Back up an app's Redis add-on (an RDB snapshot) into the Keg, checked by loading it.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The attachment or add-on (default REDIS).") var name: String?

    func run() async throws {
        let client = try global.client()
        let a = try await addonOf(.redis, client, app: app, name: name)
        let b = try await client.captureBackup(app, addon: a.name)
        say(PgBackups.line(b, unit: "keys"))
        if b.state != .verified { throw ExitCode(1) }
        say("Snapshot \(b.dump?.description ?? "")")
    }
}

/// What `pg:backups:restore` and `pg:backups:delete` name: the app, the backup, the add-on, and the confirmation.
struct BackupTarget: ParsableArguments {
    @Argument(help: "The app.") var app: String
    @Argument(help: "The backup (b001, …; a restore also takes the KID, or 8+ digits of it, of any backup of an add-on the app has).") var backup: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?
    @Option(help: "The add-on's name, to confirm without a prompt.") var confirm: String?

    /// The client and the add-on, once the user confirmed (`warning` with ADDON as the add-on's name).
    func resolve(_ global: GlobalOptions, warning: String) async throws -> (KbuildClient, AddonRecord) {
        let client = try global.client()
        let a = try await postgresAddon(client, app: app, name: database)
        try confirmDestroy(a.name, given: confirm, warning: warning.replacingOccurrences(of: "ADDON", with: a.name))
        return (client, a)
    }
}
