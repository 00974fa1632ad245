public import KbuildCore
import Foundation
import GRDB
import Synchronization
public import KbuildState

/// The embedded ref store: one SQLite file (WAL, synchronous=FULL) through GRDB.
///
/// Several processes may open the same file (`kbuild up` and the CLI): SQLite
/// serialises the writers, and a watch notices other processes' changes by
/// asking again every `pollInterval`; changes made through this instance wake
/// its watchers at once.
public final class SQLiteRefStore: RefStore {
    private let pool: DatabasePool
    private let path: String
    private let notifier = ChangeNotifier()
    public let pollInterval: Duration

    public init(path: String, pollInterval: Duration = .milliseconds(50)) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            pool = try DatabasePool(path: path, configuration: config)
            try SQLiteRefStore.migrator.migrate(pool)
        } catch {
            throw KbuildError(.io, "failed to open ref store \(path): \(error)")
        }
        self.pollInterval = pollInterval
        self.path = path
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE refs (
                    name TEXT PRIMARY KEY NOT NULL,
                    kid BLOB NOT NULL,
                    revision INTEGER NOT NULL,
                    version INTEGER NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE changes (
                    revision INTEGER PRIMARY KEY NOT NULL,
                    name TEXT NOT NULL,
                    old BLOB,
                    new BLOB,
                    version INTEGER NOT NULL,
                    time REAL NOT NULL,
                    actor TEXT NOT NULL
                );
                CREATE INDEX changes_by_name ON changes(name, revision);
                """)
        }
        return m
    }

    public func get(_ name: RefName) async throws -> Ref? {
        try await read("get ref \(name)") { db in
            try Row.fetchOne(db, sql: "SELECT name, kid, revision, version FROM refs WHERE name = ?", arguments: [name.rawValue]).map(SQLiteRefStore.ref)
        }
    }

    public func list(prefix: RefName?) async throws -> [Ref] {
        try await read("list refs under \(prefix?.rawValue ?? "/")") { db in
            let (clause, args) = SQLiteRefStore.prefixClause(prefix)
            return try Row.fetchAll(db, sql: "SELECT name, kid, revision, version FROM refs WHERE \(clause) ORDER BY name", arguments: args).map(SQLiteRefStore.ref)
        }
    }

    @discardableResult
    public func compareAndSwap(_ name: RefName, to kid: KID?, expecting: RefExpectation, actor: String) async throws -> RefChange {
        let change: RefChange = try await write("update ref \(name)") { db in
            let current = try Row.fetchOne(db, sql: "SELECT name, kid, revision, version FROM refs WHERE name = ?", arguments: [name.rawValue]).map(SQLiteRefStore.ref)
            try expecting.check(current: current, name: name)
            if current == nil && kid == nil {
                throw KbuildError(.notFound, "failed to delete ref \(name): no such ref")
            }
            let revision = Revision((try Int64.fetchOne(db, sql: "SELECT MAX(revision) FROM changes") ?? 0) + 1)
            let lastVersion = try Int64.fetchOne(db, sql: "SELECT MAX(version) FROM changes WHERE name = ?", arguments: [name.rawValue]) ?? 0
            let version = kid == nil ? 0 : lastVersion + 1
            let change = RefChange(revision: revision, name: name, old: current?.kid, new: kid, version: version, time: Date(), actor: actor)
            try db.execute(sql: "INSERT INTO changes(revision, name, old, new, version, time, actor) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           arguments: [revision.value, name.rawValue, change.old.map { Data($0.rawBytes) }, kid.map { Data($0.rawBytes) },
                                       version, change.time.timeIntervalSince1970, actor])
            if let kid {
                try db.execute(sql: "INSERT OR REPLACE INTO refs(name, kid, revision, version) VALUES (?, ?, ?, ?)",
                               arguments: [name.rawValue, Data(kid.rawBytes), revision.value, version])
            } else {
                try db.execute(sql: "DELETE FROM refs WHERE name = ?", arguments: [name.rawValue])
            }
            return change
        }
        notifier.notifyAll()
        return change
    }

    public func history(_ name: RefName, limit: Int?) async throws -> [RefChange] {
        try await read("read the history of ref \(name)") { db in
            try Row.fetchAll(db, sql: "SELECT * FROM changes WHERE name = ? ORDER BY revision DESC LIMIT ?",
                             arguments: [name.rawValue, limit ?? -1]).map(SQLiteRefStore.change)
        }
    }

    public func changes(prefix: RefName?, after: Revision, limit: Int) async throws -> [RefChange] {
        try await read("read changes after revision \(after)") { db in
            let (clause, args) = SQLiteRefStore.prefixClause(prefix)
            return try Row.fetchAll(db, sql: "SELECT * FROM changes WHERE revision > ? AND (\(clause)) ORDER BY revision LIMIT ?",
                                    arguments: [after.value] + args + [limit]).map(SQLiteRefStore.change)
        }
    }

    public func currentRevision() async throws -> Revision {
        try await read("read the current revision") { db in Revision(try Int64.fetchOne(db, sql: "SELECT MAX(revision) FROM changes") ?? 0) }
    }

    public func get(_ name: RefName, at: Revision) async throws -> Ref? {
        try await read("get ref \(name) at revision \(at)") { db in
            try Row.fetchOne(db, sql: """
                SELECT name, new AS kid, revision, version FROM changes WHERE name = ? AND revision <= ?
                ORDER BY revision DESC LIMIT 1
                """, arguments: [name.rawValue, at.value]).flatMap(SQLiteRefStore.refThen)
        }
    }

    public func list(prefix: RefName?, at: Revision) async throws -> [Ref] {
        try await read("list refs under \(prefix?.rawValue ?? "/") at revision \(at)") { db in
            let (clause, args) = SQLiteRefStore.prefixClause(prefix)
            // Each name's last change at or before `at` (the name and revision index answers it); a delete means absent.
            return try Row.fetchAll(db, sql: """
                SELECT c.name, c.new AS kid, c.revision, c.version FROM changes c
                JOIN (SELECT name, MAX(revision) AS last FROM changes WHERE revision <= ? AND (\(clause)) GROUP BY name) m
                  ON c.revision = m.last
                ORDER BY c.name
                """, arguments: [at.value] + args).compactMap(SQLiteRefStore.refThen)
        }
    }

    public func watch(prefix: RefName?, after: Revision) -> RefWatch {
        let notifier = self.notifier
        let poll = pollInterval
        // The generation is read before each look, and the wait is for a notification after it.
        let looked = Looked()
        return RefWatch(after: after,
                        fetch: { [self] last in
                            looked.value.withLock { $0 = notifier.generation }
                            return try await self.changes(prefix: prefix, after: last, limit: 1000)
                        },
                        wait: { try await notifier.wait(after: looked.value.withLock { $0 }, atMost: poll) })
    }

    // MARK: helpers

    private func read<T: Sendable>(_ verb: @autoclosure () -> String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.read(body) } catch { throw translate(error, verb()) }
    }

    private func write<T: Sendable>(_ verb: @autoclosure () -> String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.write(body) } catch { throw translate(error, verb()) }
    }

    private func translate(_ error: any Error, _ verb: String) -> KbuildError {
        if let e = error as? KbuildError { return e }
        return KbuildError(.io, "failed to \(verb) in ref store \(path): \(error)")
    }

    static func prefixClause(_ prefix: RefName?) -> (String, StatementArguments) {
        guard let prefix else { return ("1", []) }
        // Everything under "a/b" sorts in ["a/b/", "a/b0"): '0' follows '/'.
        return ("name = ? OR (name >= ? AND name < ?)", [prefix.rawValue, prefix.rawValue + "/", prefix.rawValue + "0"])
    }

    static func kid(_ value: DatabaseValue) throws -> KID? {
        guard let data = Data.fromDatabaseValue(value) else { return nil }
        guard let kid = KID(rawBytes: data) else { throw KbuildError(.corrupt, "failed to read ref store: a KID of \(data.count) bytes") }
        return kid
    }

    static func ref(_ row: Row) throws -> Ref {
        Ref(name: try RefName(row["name"]), kid: try kid(row["kid"])!, revision: Revision(row["revision"]), version: row["version"])
    }

    /// A ref from its last change, nil when that change deleted it.
    static func refThen(_ row: Row) throws -> Ref? {
        guard let kid = try kid(row["kid"]) else { return nil }
        return Ref(name: try RefName(row["name"]), kid: kid, revision: Revision(row["revision"]), version: row["version"])
    }

    static func change(_ row: Row) throws -> RefChange {
        RefChange(revision: Revision(row["revision"]), name: try RefName(row["name"]), old: try kid(row["old"]), new: try kid(row["new"]),
                  version: row["version"], time: Date(timeIntervalSince1970: row["time"]), actor: row["actor"])
    }
}

/// The notifier's generation when a watch last looked for changes.
final class Looked: Sendable {
    let value = Mutex<UInt64>(0)
}
