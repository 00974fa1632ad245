public import KbuildCore
public import Foundation

/// What an add-on is: a database kbuild runs as an ordinary app of its own.
public enum AddonKind: String, Codable, Sendable, CaseIterable {
    case postgres
    case redis

    /// The port its server listens on at its service address.
    public var port: Int { self == .postgres ? 5432 : 6379 }
    /// The config var prefix an attachment gets without `--as` (`DATABASE_URL`, `REDIS_URL`).
    public var defaultAs: String { self == .postgres ? "DATABASE" : "REDIS" }
    /// Its process type in its app, and the command the add-on stack runs it with.
    public var processType: String { rawValue }
    public var command: String { "exec /usr/local/lib/kbuild/addon-\(rawValue)" }

    public init(parsing text: String) throws {
        let aliases = ["postgresql": "postgres", "heroku-postgresql": "postgres", "pg": "postgres", "heroku-redis": "redis"]
        guard let kind = AddonKind(rawValue: aliases[text] ?? text) else {
            let kinds = AddonKind.allCases.map(\.rawValue).joined(separator: ", ")
            throw KbuildError(.invalidArgument, "unknown add-on kind \(text.debugQuoted): kbuild offers \(kinds)")
        }
        self = kind
    }
}

/// An app an add-on is attached to, and the name its URL has there (`AS_URL`).
public struct AddonAttachment: Codable, Sendable, Equatable {
    public var app: String
    public var name: String

    public init(app: String, name: String) {
        self.app = app
        self.name = name
    }

    public var variable: String { name + "_URL" }
}

/// An add-on (`addons:create`), at `addons/NAME`: its own app (`app`, of the
/// same name) runs its server on a volume; the apps in `attachments` reach it
/// at `service` and have its URL in their config. Its password is in its
/// app's config and theirs, never here.
public struct AddonRecord: Codable, Sendable, Equatable {
    public var kind = "kbuild.addon/v1"
    public var name: String
    public var addon: AddonKind
    /// The app that made it (its owner): its token may manage it.
    public var owner: String
    /// The stack it runs on (`debian-12-addons`) and the server's major version there.
    public var stack: String
    public var version: String
    public var service: ServiceAddress
    /// The volume of its app that holds its data.
    public var volume: String
    public var attachments: [AddonAttachment]
    /// Daily backups (`pg:backups:schedule`), if any.
    public var schedule: BackupSchedule?
    /// The add-on this one replaced (`addons:upgrade`), kept until its owner destroys it.
    public var upgradedFrom: String?
    /// How many backups were numbered (b001 …): a number is never given twice.
    public var backupsTaken: Int?
    public var createdBy: String
    public var createdAt: Date

    public init(name: String, addon: AddonKind, owner: String, stack: String, version: String, service: ServiceAddress, volume: String,
                attachments: [AddonAttachment], createdBy: String, createdAt: Date = Date()) {
        self.name = name
        self.addon = addon
        self.owner = owner
        self.stack = stack
        self.version = version
        self.service = service
        self.volume = volume
        self.attachments = attachments
        self.createdBy = createdBy
        self.createdAt = createdAt
    }

    /// The user and database an add-on's server has (one of each, as Heroku's).
    public static let user = "kbuild"
    public static let database = "kbuild"

    /// What an attached app's `AS_URL` is.
    public func url(password: String) -> String {
        switch addon {
        case .postgres: "postgres://\(Self.user):\(password)@\(service.address):\(service.port)/\(Self.database)"
        case .redis: "redis://default:\(password)@\(service.address):\(service.port)"
        }
    }

    /// An attachment's name: a config var name's start, upper case (`DATABASE`, `CACHE`, `HEROKU_POSTGRESQL_RED`).
    public static func check(attachmentName name: String) throws {
        let bytes = Array(name.utf8)
        let ok = !bytes.isEmpty && bytes.count <= 60 && !(bytes[0] >= 0x30 && bytes[0] <= 0x39)
            && bytes.allSatisfy { ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5f }
        guard ok, !name.hasPrefix("KBUILD_") else {
            throw KbuildError(.invalidArgument, "invalid add-on name \(name.debugQuoted) for --as: upper-case letters, digits and '_' (such as DATABASE), not starting with a digit or KBUILD_")
        }
    }
}

/// One backup of an add-on (`pg:backups:capture`), at `backups/ADDON/ID`:
/// its dump in the Keg (PostgreSQL's custom format, uncompressed so that the
/// Keg's chunks are shared between successive backups; Redis's RDB file), and
/// whether a test restore of it into a scratch database succeeded. Only a
/// verified backup is one: a failed one says why.
public struct BackupRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Dumped, and restored into a scratch database without an error.
        case verified
        /// The dump or its test restore failed (`error`).
        case failed
    }
    public var kind = "kbuild.addon-backup/v1"
    /// `b001`, `b002`, … in the order they were taken.
    public var id: String
    public var addon: String
    public var addonKind: AddonKind
    /// The server's version when it was taken.
    public var version: String
    public var dump: KID?
    public var size: UInt64
    /// The database's size as the server said (pg_database_size; a Redis one's keys).
    public var databaseSize: UInt64?
    public var state: State
    public var error: String?
    /// How it was taken: `Source.capture`, `.schedule`, `.importFile`, `.upgrade`.
    public var source: String
    public enum Source {
        public static let capture = "capture"
        public static let schedule = "schedule"
        public static let importFile = "import"
        public static let upgrade = "upgrade"
    }
    /// Seconds the dump into the Keg took, and its test restore.
    public var dumpSeconds: Double?
    public var verifySeconds: Double?
    public var createdBy: String
    public var createdAt: Date
    public var finishedAt: Date
    public var links: [KID]

    public init(id: String, addon: String, addonKind: AddonKind, version: String, dump: KID?, size: UInt64, databaseSize: UInt64?, state: State,
                error: String?, source: String, createdBy: String, createdAt: Date, finishedAt: Date = Date()) {
        self.id = id
        self.addon = addon
        self.addonKind = addonKind
        self.version = version
        self.dump = dump
        self.size = size
        self.databaseSize = databaseSize
        self.state = state
        self.error = error
        self.source = source
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.finishedAt = finishedAt
        self.links = dump.map { [$0] } ?? []
    }

    /// `b` and a number of at least three digits.
    public static func id(_ n: Int) -> String { "b" + String(format: "%03d", n) }
    public static func number(_ id: String) -> Int? { id.hasPrefix("b") ? Int(id.dropFirst()) : nil }
}
