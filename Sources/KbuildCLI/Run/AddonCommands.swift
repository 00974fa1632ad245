import ArgumentParser
import Foundation
import KbuildClient
import KbuildCore
import KbuildState

/// `kbuild addons APP`.
struct AddonsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "addons", abstract: "List the add-ons an app has or is attached to.",
        discussion: "An add-on is a PostgreSQL or Redis server kbuild runs as an app of its own (OWNER-KIND), on a volume, reached only by the apps attached to it.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let list = try await global.client().addons(app)
        if json { return try printJSON(list) }
        guard !list.isEmpty else { return say("\(app) has no add-ons (kbuild addons:create postgres --app \(app))") }
        say("=== \(app) add-ons")
        for a in list {
            let attached = a.record.attachments.map { "\($0.app) as \($0.name)" }.joined(separator: ", ")
            say("\(a.record.name)  \(a.record.addon.rawValue) \(a.record.version)  \(a.state)  attached to \(attached.isEmpty ? "nothing" : attached)")
        }
    }
}

/// `kbuild addons:info APP ADDON`.
struct AddonsInfo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "addons:info", abstract: "Show one add-on.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app that has it.") var app: String
    @Argument(help: "The add-on.") var addon: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let a = try await global.client().addon(app, addon)
        if json { return try printJSON(a) }
        let r = a.record
        say("=== \(r.name)")
        say("Kind:      \(r.addon.rawValue) \(r.version) (stack \(r.stack))")
        say("State:     \(a.state)\(a.node.map { " on node \($0)" } ?? "")")
        say("Address:   \(r.service.address):\(r.service.port) (from the apps attached to it only)")
        say("Data:      volume \(r.volume) of app \(r.name) (kbuild volumes \(r.name))")
        say("Owner:     \(r.owner)")
        say("Attached:  " + (r.attachments.isEmpty ? "nothing" : r.attachments.map { "\($0.app) as \($0.variable)" }.joined(separator: ", ")))
        say("Created:   \(shortDate(r.createdAt)) by \(r.createdBy)")
    }
}

/// `kbuild addons:create KIND --app APP [--as NAME]`.
struct AddonsCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "addons:create", abstract: "Run a PostgreSQL or Redis server for an app, on a volume, and attach it (DATABASE_URL or REDIS_URL).",
        discussion: """
            KIND: postgres or redis. It runs as an app of its own (APP-KIND) on an add-on stack (default: the newest here; \
            debian-12-addons has PostgreSQL 15 and Redis 7, debian-13-addons PostgreSQL 17 and Redis 8: kbuild stack create \
            debian-12-addons makes one), on a volume of --size (default 1G), with a \
            password of its own; PostgreSQL accepts TLS (sslmode=require). Attaching sets AS_URL on the app and opens its \
            processes', one-off runs' and release phase's network to the add-on's address alone: a new release.
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "postgres or redis.") var kind: String
    @Option(help: "The app to attach it to.") var app: String
    @Option(name: .customLong("as"), help: "The config var's name without _URL (default DATABASE or REDIS).") var attachment: String?
    @Option(help: "The add-on stack.") var stack: String?
    @Option(help: "Its volume's size (default 1G).") var size: String?

    func run() async throws {
        let bytes = try size.map { try parseBytes($0, what: "--size") }
        let a = try await global.client().createAddon(app, API.AddonCreate(kind: kind, as: attachment, stack: stack, size: bytes))
        let variable = a.record.attachments.first { $0.app == app }?.variable ?? "?"
        say("Created \(a.record.name): \(a.record.addon.rawValue) \(a.record.version), \(a.state)")
        say("Attached to \(app) as \(variable) (kbuild config \(app))")
    }
}

/// `kbuild addons:attach ADDON --app APP [--as NAME]`.
struct AddonsAttach: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "addons:attach", abstract: "Attach an add-on to another app too (one database, two apps): AS_URL, a new release.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The add-on.") var addon: String
    @Option(help: "The app to attach it to.") var app: String
    @Option(name: .customLong("as"), help: "The config var's name without _URL (default DATABASE or REDIS).") var attachment: String?

    func run() async throws {
        let a = try await global.client().attachAddon(addon, to: app, as: attachment)
        say("Attached \(addon) to \(app) as \((attachment ?? a.record.addon.defaultAs) + "_URL")")
    }
}

/// `kbuild addons:detach NAME --app APP`.
struct AddonsDetach: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "addons:detach", abstract: "Detach an add-on from an app (its URL unset, its network closed: a new release); the add-on stays.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The attachment's name (DATABASE, REDIS, …).") var name: String
    @Option(help: "The app.") var app: String

    func run() async throws {
        let a = try await global.client().detachAddon(name, from: app)
        say("Detached \(a.record.name) (\(name)) from \(app)")
    }
}

/// `kbuild addons:destroy ADDON --app OWNER`.
struct AddonsDestroy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "addons:destroy", abstract: "Delete an add-on and its data for good (refused while attached unless --force).",
        discussion: "Asks you to type the add-on's name; --confirm NAME answers in advance. --force detaches it from every app first (each gets a new release).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The add-on.") var addon: String
    @Option(help: "The app that owns it.") var app: String
    @Option(help: "The add-on's name again, to confirm without a prompt.") var confirm: String?
    @Flag(help: "Detach it from every app first.") var force = false

    func run() async throws {
        try confirmDestroy(addon, given: confirm, warning: "This deletes add-on \(addon) and all its data.")
        try await global.client().destroyAddon(addon, app: app, force: force)
        say("Destroyed \(addon)")
    }
}

/// The app's PostgreSQL add-on: the one attached as `name` (default DATABASE), else its only one.
func postgresAddon(_ client: KbuildClient, app: String, name: String?) async throws -> AddonRecord {
    let all = try await client.addons(app).map(\.record).filter { $0.addon == .postgres }
    if let name {
        guard let a = all.first(where: { r in r.attachments.contains { $0.app == app && $0.name == name } } ) ?? all.first(where: { $0.name == name }) else {
            throw KbuildError(.notFound, "\(app) has no PostgreSQL add-on \(name) (kbuild addons \(app))")
        }
        return a
    }
    if let a = all.first(where: { r in r.attachments.contains { $0.app == app && $0.name == "DATABASE" } }) { return a }
    guard all.count == 1 else {
        throw KbuildError(all.isEmpty ? .notFound : .ambiguous, all.isEmpty ? "\(app) has no PostgreSQL add-on (kbuild addons:create postgres --app \(app))"
                                                                        : "\(app) has \(all.count) PostgreSQL add-ons: name one")
    }
    return all[0]
}

/// The shell line that runs psql beside an add-on (in a one-off of its own app), over TLS.
func psqlLine(_ a: AddonRecord, arguments: String = "") -> String {
    "PGPASSWORD=\"$KBUILD_ADDON_PASSWORD\" PGSSLMODE=require exec psql -h \(a.service.address) -p \(a.service.port) -U \(AddonRecord.user) \(AddonRecord.database) \(arguments)"
}

/// `kbuild pg:psql APP [DATABASE]`.
struct PgPsql: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg:psql", abstract: "Open psql against an app's PostgreSQL add-on (run beside it, attached to this terminal).",
        discussion: "Works from another machine too: psql runs in a one-off process of the add-on's app (with the admin token: an app token does not reach the add-on's app, whose config holds its password and key). Piped input is run as a script; -c runs one command.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?
    @Option(name: .shortAndLong, help: "Run this SQL and exit.") var command: String?

    func run() async throws {
        let a = try await postgresAddon(try global.client(), app: app, name: database)
        let extra = command.map { "-c " + shellQuote($0) } ?? ""
        try await RunCommand.oneOff(global: global, app: a.name, words: ["sh", "-c", psqlLine(a, arguments: extra)], noTTY: command != nil, noStdin: command != nil)
    }
}

/// `kbuild pg:info APP [DATABASE]`.
struct PgInfo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pg:info", abstract: "Show an app's PostgreSQL add-on: version, size, connections.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?

    func run() async throws {
        let client = try global.client()
        let a = try await postgresAddon(client, app: app, name: database)
        let info = try await client.addon(app, a.name)
        say("=== \(a.name) (\(a.attachments.map(\.variable).joined(separator: ", ")))")
        say("Status:      \(info.state)\(info.node.map { " on node \($0)" } ?? "")")
        let sql = "select 'Version:     ' || current_setting('server_version') union all select 'Data Size:   ' || pg_size_pretty(pg_database_size('\(AddonRecord.database)')) union all select 'Tables:      ' || count(*) from information_schema.tables where table_schema = 'public' union all select 'Connections: ' || count(*) || '/' || current_setting('max_connections') from pg_stat_activity where backend_type = 'client backend'"
        try await RunCommand.oneOff(global: global, app: a.name, words: ["sh", "-c", psqlLine(a, arguments: "-At -c " + shellQuote(sql))], noTTY: true, noStdin: true)
    }
}

func shellQuote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

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
        guard !list.isEmpty else { return say("\(a.name) has no backups (kbuild pg:backups:capture \(app))") }
        say("=== \(a.name) backups")
        for b in list.reversed() { say(PgBackups.line(b)) }
    }

    static func line(_ b: BackupRecord) -> String {
        let what = b.state == .verified ? "verified" : "FAILED: \(b.error ?? "")"
        let size = b.databaseSize.map { "database \(formatBytes($0)), " } ?? ""
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
    @Argument(help: "The app.") var app: String
    @Argument(help: "The backup (b001, …).") var backup: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?
    @Option(help: "The add-on's name, to confirm without a prompt.") var confirm: String?

    func run() async throws {
        let client = try global.client()
        let a = try await postgresAddon(client, app: app, name: database)
        try confirmDestroy(a.name, given: confirm, warning: "This replaces the data of \(a.name) with backup \(backup).")
        let b = try await client.restoreBackup(app, addon: a.name, backup: backup)
        say("Restored \(b.id) (\(shortDate(b.createdAt))) into \(a.name)")
    }
}

/// `kbuild pg:backups:download APP BACKUP [DATABASE] [-o FILE]`.
struct PgBackupsDownload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg:backups:download", abstract: "Write a backup's dump to a file (pg_restore reads it).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The backup (b001, …).") var backup: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?
    @Option(name: .shortAndLong, help: "The file (default ADDON-BACKUP.dump).") var output: String?

    func run() async throws {
        let client = try global.client()
        let a = try await postgresAddon(client, app: app, name: database)
        let path = output ?? "\(a.name)-\(backup).dump"
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
