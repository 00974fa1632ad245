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
        if let s = r.schedule { say("Backups:   daily at \(s.description)\(s.keep.map { ", the newest \($0) kept" } ?? "")") }
        if let from = r.upgradedFrom { say("Upgraded:  from \(from) (kept, read-only, until you destroy it)") }
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
    try await addonOf(.postgres, client, app: app, name: name)
}

/// The app's add-on (of `kind`, if given) attached as `name` or named so; without a name, the one attached as the kind's
/// default (DATABASE, REDIS), else its only one.
func addonOf(_ kind: AddonKind?, _ client: KbuildClient, app: String, name: String?) async throws -> AddonRecord {
    let label = kind.map { $0 == .postgres ? "PostgreSQL add-on" : "Redis add-on" } ?? "add-on"
    let all = try await client.addons(app).map(\.record).filter { kind == nil || $0.addon == kind }
    if let name {
        guard let a = all.first(where: { r in r.attachments.contains { $0.app == app && $0.name == name } } ) ?? all.first(where: { $0.name == name }) else {
            throw KbuildError(.notFound, "\(app) has no \(label) \(name) (kbuild addons \(app))")
        }
        return a
    }
    if let kind, let a = all.first(where: { r in r.attachments.contains { $0.app == app && $0.name == kind.defaultAs } }) { return a }
    guard all.count == 1 else {
        throw KbuildError(all.isEmpty ? .notFound : .ambiguous, all.isEmpty ? "\(app) has no \(label) (kbuild addons:create \(kind?.rawValue ?? "postgres") --app \(app))"
                                                                        : "\(app) has \(all.count) of them (\(label)s): name one")
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
        discussion: "Works from another machine too, with the owner app's token: psql runs in a one-off process beside the add-on (of the add-on's app, whose image has psql and whose network reaches it). Piped input is run as a script; -c runs one command.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?
    @Option(name: .shortAndLong, help: "Run this SQL and exit.") var command: String?

    func run() async throws {
        let a = try await postgresAddon(try global.client(), app: app, name: database)
        let extra = command.map { "-c " + shellQuote($0) } ?? ""
        try await RunCommand.oneOff(global: global, app: a.owner, addon: a.name, words: ["sh", "-c", psqlLine(a, arguments: extra)], noTTY: command != nil, noStdin: command != nil)
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
        try await RunCommand.oneOff(global: global, app: a.owner, addon: a.name, words: ["sh", "-c", psqlLine(a, arguments: "-At -c " + shellQuote(sql))], noTTY: true, noStdin: true)
    }
}

func shellQuote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

/// `kbuild addons:rotate-credentials APP [NAME]`.
struct AddonsRotateCredentials: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "addons:rotate-credentials", abstract: "Give an add-on a new password: it restarts with it, and each attached app gets a new release with the new URL.",
        discussion: "Sessions opened with the old password end with the add-on's restart. NAME is the attachment (DATABASE, REDIS, …) or the add-on; the app must own it.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app that owns it.") var app: String
    @Argument(help: "The attachment or add-on (default: the app's only one).") var name: String?

    func run() async throws {
        let client = try global.client()
        let a = try await addonOf(nil, client, app: app, name: name)
        _ = try await client.rotateCredentials(app, addon: a.name)
        say("Rotated the credentials of \(a.name); new releases of \(a.attachments.map(\.app).joined(separator: ", ").nonEmpty ?? "no app")")
    }
}

/// `kbuild addons:upgrade APP DATABASE --version N`.
struct AddonsUpgrade: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "addons:upgrade", abstract: "Move an app's PostgreSQL add-on to another major version: a new instance, its data copied, its attachments switched.",
        discussion: """
            The add-on stack that has --version runs the new instance (debian-12-addons has PostgreSQL 15, debian-13-addons 17). \
            The old instance is made read-only first (its sessions end: writes fail rather than being lost), backed up, the \
            backup verified and restored into the new one; then each attached app gets a new release with the new URL. The old \
            instance stays, read-only and detached, until you destroy it (kbuild addons:destroy). A failure leaves it as it was.
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app that owns it.") var app: String
    @Argument(help: "The attachment or add-on (default DATABASE).") var database: String?
    @Option(help: "The PostgreSQL major version to move to (such as 17).") var version: String

    func run() async throws {
        let client = try global.client()
        let a = try await postgresAddon(client, app: app, name: database)
        let info = try await client.upgradeAddon(app, addon: a.name, version: version)
        say("Upgraded \(a.name) (PostgreSQL \(a.version)) to \(info.record.name) (PostgreSQL \(info.record.version)), \(info.state)")
        say("Attached to \(info.record.attachments.map { "\($0.app) as \($0.variable)" }.joined(separator: ", ").nonEmpty ?? "nothing")")
        say("\(a.name) is kept, read-only: kbuild addons:destroy \(a.name) --app \(app) once you are done with it")
    }
}

extension String {
    var nonEmpty: String? { isEmpty ? nil : self }
}
