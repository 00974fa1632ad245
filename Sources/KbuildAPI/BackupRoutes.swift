import Hummingbird
import KbuildServer
import HTTPTypes
import Foundation
import KbuildCore
import KbuildState
import Keg
import Synchronization
import NIOPosix

/// PostgreSQL backups in the Keg (`pg:backups:*`): `pg_dump` in PostgreSQL's
/// custom format, uncompressed (`-Z0`) so that successive dumps share the
/// Keg's chunks, taken beside the add-on (a one-off of its app, on this
/// server) and streamed into the Keg as it comes; then restored into a
/// scratch database, and only a backup whose test restore succeeded is
/// `verified`. A restore is the same restore into the add-on's database.
extension APIRoutes {
    func registerBackups(on router: Router<Context>) {
        let p = "/api/v1/apps/:app/addons/:addon/backups"
        router.get(RouterPath(p)) { _, c in
            try await self.answer {
                let (_, addon) = try await self.addon(c.parameters.get("addon") ?? "", seenBy: try await self.existing(c))
                return try await self.backups(addon.name)
            }
        }
        router.post(RouterPath(p)) { r, c in
            try await self.answer {
                let (_, addon) = try await self.addon(c.parameters.get("addon") ?? "", seenBy: try await self.existing(c))
                return try await self.capture(addon, source: BackupRecord.Source.capture, actor: self.actor(r))
            }
        }
        router.post(RouterPath(p + "/import")) { r, c in
            try await self.answer {
                let addon = try await self.ownedAddon(c, to: "import backups into it")
                return try await self.importBackup(addon, body: r.body, actor: self.actor(r))
            }
        }
        router.post(RouterPath(p + "/:backup/restore")) { r, c in
            try await self.answer {
                let addon = try await self.ownedAddon(c, to: "restore backups over it")
                guard r.uri.queryParameters.get("confirm") == addon.name else {
                    throw KbuildError(.invalidArgument, "refusing to restore over \(addon.name)'s data without confirmation: pass confirm=\(addon.name)")
                }
                let backup = try await self.backup(c.parameters.get("backup") ?? "", for: addon, seenBy: addon.owner)
                try await self.addonsBusy.holding(addon.name, doing: "a backup or restore") { try await self.restore(backup, into: addon) }
                return backup
            }
        }
        router.delete(RouterPath(p + "/:backup")) { r, c in
            try await self.answer {
                let addon = try await self.ownedAddon(c, to: "delete its backups")
                let backup = try await self.backup(addon.name, c.parameters.get("backup") ?? "")
                guard r.uri.queryParameters.get("confirm") == addon.name else {
                    throw KbuildError(.invalidArgument, "refusing to delete backup \(backup.id) of \(addon.name) without confirmation: pass confirm=\(addon.name)")
                }
                try await self.deleteBackup(backup, actor: self.actor(r))
                return backup
            }
        }
        let schedule = "/api/v1/apps/:app/addons/:addon/schedule"
        router.put(RouterPath(schedule)) { r, c in
            try await self.answer {
                let addon = try await self.ownedAddon(c, to: "schedule its backups")
                let body = try await self.decode(API.BackupScheduleSet.self, r, c)
                let parsed = try BackupSchedule(parsing: body.at, keep: body.keep, since: Date())
                return try await self.setSchedule(addon, parsed, actor: self.actor(r))
            }
        }
        router.delete(RouterPath(schedule)) { r, c in
            try await self.answer {
                let addon = try await self.ownedAddon(c, to: "change its backup schedule")
                guard addon.schedule != nil else { throw KbuildError(.notFound, "\(addon.name) has no backup schedule") }
                return try await self.setSchedule(addon, nil, actor: self.actor(r))
            }
        }
        router.get(RouterPath(p + "/:backup/dump")) { _, c in
            do {
                let (_, addon) = try await self.addon(c.parameters.get("addon") ?? "", seenBy: try await self.existing(c))
                let backup = try await self.backup(addon.name, c.parameters.get("backup") ?? "")
                guard let dump = backup.dump, backup.state == .verified else {
                    throw KbuildError(.notFound, "backup \(backup.id) of \(addon.name) failed: it has no dump to download (\(backup.error ?? ""))")
                }
                let reader = try ObjectReader(keg: self.keg, kid: dump)
                var headers = HTTPFields()
                headers[.contentType] = "application/octet-stream"
                headers[.contentLength] = String(reader.size)
                return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                    var offset: UInt64 = 0
                    while offset < reader.size {
                        let piece = try reader.read(at: offset, maxLength: 1 << 20)
                        if piece.isEmpty { break }
                        offset += UInt64(piece.count)
                        try await writer.write(ByteBuffer(bytes: piece))
                    }
                    try await writer.finish(nil)
                })
            } catch {
                return ErrorBody.response(KbuildError.wrap(error))
            }
        }
    }

    func backups(_ addon: String) async throws -> [BackupRecord] {
        var out: [BackupRecord] = []
        for ref in try await refs.list(prefix: try Schema.backups(addon)) {
            guard case .backup(addon, _) = Schema.Key(ref.name) else { continue }
            out.append(try await reader.record(BackupRecord.self, ref.kid, what: "backup"))
        }
        return out.sorted { (BackupRecord.number($0.id) ?? 0) < (BackupRecord.number($1.id) ?? 0) }
    }

    func backup(_ addon: String, _ id: String) async throws -> BackupRecord {
        guard BackupRecord.number(id) != nil, let ref = try await refs.get(try Schema.backup(addon, id)) else {
            throw KbuildError(.notFound, "\(addon) has no backup \(id.debugQuoted) (kbuild pg:backups lists them)")
        }
        return try await reader.record(BackupRecord.self, ref.kid, what: "backup")
    }

    /// An add-on the path's app owns: what changes its backups is its owner's to do, not an attached app's (which
    /// could otherwise delete the owner's way back).
    func ownedAddon(_ c: Context, to what: String) async throws -> AddonRecord {
        let app = try await existing(c)
        let (_, addon) = try await addon(c.parameters.get("addon") ?? "", seenBy: app)
        guard addon.owner == app else {
            throw KbuildError(.forbidden, "\(addon.name) is \(addon.owner)'s add-on: only its owner may \(what)")
        }
        return addon
    }

    /// Takes a backup of the add-on into the Keg and records whether it is one:
    /// PostgreSQL's dump once a test restore of it succeeded, Redis's RDB
    /// snapshot once `redis-check-rdb` loaded it whole. One at a time per add-on.
    func capture(_ addon: AddonRecord, source: String, actor: String) async throws -> BackupRecord {
        try await addonsBusy.holding(addon.name, doing: "a backup or restore") { try await captureHeld(addon, source: source, actor: actor) }
    }

    /// `capture`, by a caller that holds the add-on in `addonsBusy`.
    func captureHeld(_ addon: AddonRecord, source: String, actor: String) async throws -> BackupRecord {
        addon.addon == .postgres ? try await capturePostgres(addon, source: source, actor: actor)
                                 : try await captureRedis(addon, source: source, actor: actor)
    }

    /// Dumps the add-on into the Keg, restores the dump into a scratch database (or, for an upgrade, into
    /// `restoringInto`: that restore is its test), and records which it came to.
    func capturePostgres(_ addon: AddonRecord, source: String, actor: String, restoringInto target: AddonRecord? = nil) async throws -> BackupRecord {
        let started = Date()
        let (connect, target_) = Self.connection(addon)
        var size: UInt64?
        let dumped: (kid: KID, bytes: UInt64, seconds: Double)
        do {
            let sized = Mutex<[UInt8]>([])
            let s = try await besideAddon(addon, script: "\(connect) psql \(target_) -At -c \"select pg_database_size('\(AddonRecord.database)')\" \(AddonRecord.database)") { out in
                sized.withLock { $0 += out }
            }
            guard s.status == 0 else { throw KbuildError(.io, "psql failed: \(s.stderr)") }
            size = UInt64(String(decoding: sized.withLock { $0 }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            // The dump goes into the Keg as it comes: chunked, hashed, deduplicated against the backups before it.
            let dumpStart = ContinuousClock.now
            let upload = UploadBox(KegUpload(keg: keg))
            let d = try await besideAddon(addon, script: "\(connect) exec pg_dump \(target_) -Fc -Z0 \(AddonRecord.database)") { out in
                try upload.append(out)
            }
            guard d.status == 0 else {
                upload.abort()
                throw KbuildError(.io, "pg_dump failed (exit status \(d.status)): \(d.stderr)")
            }
            let (kid, bytes) = try upload.commit()
            dumped = (kid, bytes, Self.seconds(since: dumpStart))
        } catch {
            return try await recordBackup(addon, dump: nil, size: 0, databaseSize: size, state: .failed, error: Self.reason(error), source: source,
                                          actor: actor, started: started, dumpSeconds: nil, verifySeconds: nil)
        }
        return try await verify(addon, dump: dumped.kid, size: dumped.bytes, databaseSize: size, source: source, actor: actor, started: started,
                                dumpSeconds: dumped.seconds, restoringInto: target)
    }

    /// Records a dump that is in the Keg, restores it into a scratch database beside the add-on (or into `target`'s
    /// database, for an upgrade), and records the verdict. A failed one keeps no dump (nothing can restore it).
    func verify(_ addon: AddonRecord, dump kid: KID, size bytes: UInt64, databaseSize size: UInt64?, source: String, actor: String, started: Date,
                dumpSeconds: Double?, restoringInto target: AddonRecord? = nil) async throws -> BackupRecord {
        // Recorded now, as not verified yet: the record keeps the dump from gc, and a capture cut short says so.
        var record = try await recordBackup(addon, dump: kid, size: bytes, databaseSize: size, state: .failed,
                                            error: "its test restore did not finish (kbuild stopped during it)", source: source, actor: actor,
                                            started: started, dumpSeconds: dumpSeconds, verifySeconds: nil)
        var failure: String?
        let verifyStart = ContinuousClock.now
        do {
            let into = target ?? addon
            // Room on the volume the restore writes to, beside the live database there. An imported dump may be
            // compressed (pg_dump -Fc compresses by default): its data is taken as four times its size.
            if let volume = try? await volumeInfo(into.name, into.volume), let used = volume.used {
                let free = volume.record.size > used ? volume.record.size - used : 0
                // The copy (pg_database_size counts its indexes), a quarter more while they are built, and a margin for
                // what WAL the restore still writes (the add-on runs wal_level=minimal). Capped at the volume's size: the
                // size psql reports is the tenant's to fake, and no sum here may overflow.
                let volumeSize = volume.record.size
                let need = min(size ?? (bytes > volumeSize / 4 ? volumeSize : bytes * 4), volumeSize)
                guard need + need / 4 + min(256 << 20, volumeSize / 8) < free else {
                    throw KbuildError(.tooLarge, "its test restore needs about \(formatMemory(need)) on volume \(into.volume) of \(into.name), which has \(formatMemory(free)) free: the database is not copied onto a full disk (a larger volume is a new add-on for now)")
                }
            }
            if let target {
                try await restoreDump(kid, id: record.id, into: target)
            } else {
                // The test restore: with the flags a restore has, into a database of its own, dropped after whatever came of
                // it (and any a capture cut short left: this add-on runs one at a time).
                let (connect, target) = Self.connection(addon)
                let scratch = "kbuild_verify_\(UInt32.random(in: 0...UInt32.max))"
                let verify = """
                    for old in $(\(connect) psql \(target) -At -c "select datname from pg_database where left(datname, 14) = 'kbuild_verify_'" \(AddonRecord.database)); do
                      \(connect) psql \(target) -q -c "drop database \\"$old\\"" \(AddonRecord.database)
                    done
                    \(connect) psql \(target) -q -c 'create database \(scratch)' \(AddonRecord.database) || exit 3
                    \(connect) pg_restore \(target) -d \(scratch) --no-owner --exit-on-error --single-transaction; rc=$?
                    \(connect) psql \(target) -q -c 'drop database \(scratch)' \(AddonRecord.database)
                    exit $rc
                    """
                let v = try await besideAddon(addon, script: verify, input: kid) { _ in }
                guard v.status == 0 else { throw KbuildError(.io, "its test restore into a scratch database failed (exit status \(v.status)): \(v.stderr)") }
            }
        } catch {
            failure = Self.reason(error)
        }
        // The verdict, over the record made before the test restore.
        record.state = failure == nil ? .verified : .failed
        record.error = failure
        if failure != nil {
            record.dump = nil
            record.links = []
        }
        record.verifySeconds = Self.seconds(since: verifyStart)
        record.finishedAt = Date()
        try await refs.set(try Schema.backup(addon.name, record.id), to: try await Records.put(record, in: keg), actor: actor)
        return record
    }

    /// Redis: an RDB snapshot fetched from the server as a replica would (`redis-cli --rdb`), loaded whole by
    /// `redis-check-rdb` beside it, then streamed into the Keg. Only a snapshot that loaded is stored. It is written
    /// to the one-off's writable root, a tmpfs charged to its memory: both are sized to the add-on's volume (which
    /// bounds the snapshot), so a large Redis is not killed for memory mid-snapshot.
    func captureRedis(_ addon: AddonRecord, source: String, actor: String) async throws -> BackupRecord {
        let started = Date()
        var keys: UInt64?
        let dumped: (kid: KID, bytes: UInt64, seconds: Double)
        do {
            let auth = "REDISCLI_AUTH=\"$KBUILD_ADDON_PASSWORD\" redis-cli -h \(addon.service.address) -p \(addon.service.port)"
            let counted = Mutex<[UInt8]>([])
            let c = try await besideAddon(addon, script: "\(auth) dbsize") { out in counted.withLock { $0 += out } }
            guard c.status == 0 else { throw KbuildError(.io, "redis-cli failed: \(c.stderr)") }
            keys = UInt64(String(decoding: counted.withLock { $0 }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            let room = (try? await volumeInfo(addon.name, addon.volume).record.size).map { max($0 + $0 / 4, 1 << 30) } ?? 1 << 30
            let dumpStart = ContinuousClock.now
            let upload = UploadBox(KegUpload(keg: keg))
            let script = """
                \(auth) --rdb /var/tmp/dump.rdb >/dev/null || exit 3
                redis-check-rdb /var/tmp/dump.rdb >/var/tmp/check.log 2>&1 || { tail -n 5 /var/tmp/check.log >&2; exit 4; }
                exec cat /var/tmp/dump.rdb
                """
            let d = try await besideAddon(addon, script: script, disk: room, memory: room + (512 << 20)) { out in try upload.append(out) }
            guard d.status == 0 else {
                upload.abort()
                let what = d.status == 4 ? "its snapshot did not load (redis-check-rdb)" : "redis-cli --rdb failed (exit status \(d.status))"
                throw KbuildError(.io, "\(what): \(d.stderr)")
            }
            let (kid, bytes) = try upload.commit()
            dumped = (kid, bytes, Self.seconds(since: dumpStart))
        } catch {
            return try await recordBackup(addon, dump: nil, size: 0, databaseSize: keys, state: .failed, error: Self.reason(error), source: source,
                                          actor: actor, started: started, dumpSeconds: nil, verifySeconds: nil)
        }
        return try await recordBackup(addon, dump: dumped.kid, size: dumped.bytes, databaseSize: keys, state: .verified, error: nil, source: source,
                                      actor: actor, started: started, dumpSeconds: dumped.seconds, verifySeconds: nil)
    }

    /// `pg:backups:import`: a dump file the client streams (pg_dump's custom format), stored and verified as a capture is.
    func importBackup(_ addon: AddonRecord, body: RequestBody, actor: String) async throws -> BackupRecord {
        guard addon.addon == .postgres else {
            throw KbuildError(.invalidArgument, "\(addon.name) is a \(addon.addon.rawValue) add-on: pg:backups:import takes PostgreSQL dumps")
        }
        return try await addonsBusy.holding(addon.name, doing: "a backup or restore") { try await importing(addon, body: body, actor: actor) }
    }

    private func importing(_ addon: AddonRecord, body: RequestBody, actor: String) async throws -> BackupRecord {
        let started = Date()
        // No larger than the add-on's volume (which a restore of it would have to hold): the Keg is not a tenant's to fill.
        let limit = try await volumeInfo(addon.name, addon.volume).record.size
        let upload = UploadBox(KegUpload(keg: keg))
        var head: [UInt8] = []
        var received: UInt64 = 0
        do {
            for try await buffer in body {
                let bytes = Array(buffer.readableBytesView)
                received += UInt64(bytes.count)
                guard received <= limit else {
                    throw KbuildError(.tooLarge, "the dump is larger than \(addon.name)'s volume (\(formatMemory(limit))), which a restore of it could not hold; nothing stored")
                }
                if head.count < 5 {
                    head += bytes.prefix(5 - head.count)
                    if head.count == 5, head != Array("PGDMP".utf8) {
                        throw KbuildError(.invalidArgument, "not a pg_dump custom-format file (it does not start with PGDMP): make it with pg_dump -Fc; nothing stored")
                    }
                }
                // Chunking, hashing and writing on the blocking-I/O pool, not the threads that serve requests.
                try await NIOThreadPool.singleton.runIfActive { try upload.append(bytes) }
            }
            guard head.count == 5 else {
                throw KbuildError(.invalidArgument, "not a pg_dump custom-format file (\(head.count) bytes): make it with pg_dump -Fc; nothing stored")
            }
        } catch {
            upload.abort()
            throw error
        }
        let (kid, bytes) = try await NIOThreadPool.singleton.runIfActive { try upload.commit() }
        return try await verify(addon, dump: kid, size: bytes, databaseSize: nil, source: BackupRecord.Source.importFile, actor: actor,
                                started: started, dumpSeconds: nil)
    }

    static func reason(_ error: any Error) -> String { (error as? KbuildError)?.message ?? "\(error)" }

    /// A new backup record, numbered from the add-on's count of backups (a number is never given twice, even after
    /// the newest is deleted).
    func recordBackup(_ addon: AddonRecord, dump: KID?, size: UInt64, databaseSize: UInt64?, state: BackupRecord.State, error: String?, source: String,
                      actor: String, started: Date, dumpSeconds: Double?, verifySeconds: Double?) async throws -> BackupRecord {
        let highest = try await backups(addon.name).compactMap { BackupRecord.number($0.id) }.max() ?? 0
        let numbered = try await refs.update(try Schema.addon(addon.name), as: AddonRecord.self, in: keg, what: "add-on", actor: actor) { old in
            guard var a = old else { throw KbuildError(.notFound, "add-on \(addon.name) was destroyed meanwhile") }
            a.backupsTaken = max(a.backupsTaken ?? 0, highest) + 1
            return a
        }
        let n = numbered.record?.backupsTaken ?? highest + 1
        var record = BackupRecord(id: BackupRecord.id(n), addon: addon.name, addonKind: addon.addon, version: addon.version, dump: dump, size: size,
                                  databaseSize: databaseSize, state: state, error: error, source: source, createdBy: actor, createdAt: started)
        record.dumpSeconds = dumpSeconds
        record.verifySeconds = verifySeconds
        try await refs.compareAndSwap(try Schema.backup(addon.name, record.id), to: try await Records.put(record, in: keg), expecting: .absent, actor: actor)
        return record
    }

    /// What psql, pg_dump and pg_restore beside an add-on start with: its password from its config, TLS, writes allowed
    /// (an add-on an upgrade left read-only can still be restored into), `options`; and its address and role.
    static func connection(_ addon: AddonRecord, options: String = "") -> (environment: String, target: String) {
        ("PGOPTIONS='-c default_transaction_read_only=off\(options)' PGPASSWORD=\"$KBUILD_ADDON_PASSWORD\" PGSSLMODE=require",
         "-h \(addon.service.address) -p \(addon.service.port) -U \(AddonRecord.user)")
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// A backup to restore into `addon`: one of its own (`b001`), or any backup of an add-on `app` may see, named by
    /// its record's or its dump's KID (a full KID, or a prefix of at least 8 digits); it must be of the add-on's kind.
    func backup(_ name: String, for addon: AddonRecord, seenBy app: String) async throws -> BackupRecord {
        let found: BackupRecord
        // An id (b001) is shorter than the shortest KID prefix (8 digits, which b0123456 could be).
        if BackupRecord.number(name) != nil && name.utf8.count < 8 {
            found = try await backup(addon.name, name)
        } else {
            let prefix: KIDPrefix
            do { prefix = try KIDPrefix(parsing: name) } catch {
                throw KbuildError(.invalidArgument, "invalid backup \(name.debugQuoted): want an id such as b001 or a backup's KID; nothing changed")
            }
            var matches: [BackupRecord] = []
            for other in try await addonRecords() where Self.concerns(other, app) {
                for ref in try await refs.list(prefix: try Schema.backups(other.name)) {
                    guard case .backup = Schema.Key(ref.name) else { continue }
                    let b = try await reader.record(BackupRecord.self, ref.kid, what: "backup")
                    if ref.kid.hex.hasPrefix(prefix.hex) || (b.dump?.hex.hasPrefix(prefix.hex) ?? false) { matches.append(b) }
                }
            }
            guard !matches.isEmpty else {
                throw KbuildError(.notFound, "\(name) is not a backup of any add-on \(app) has (kbuild pg:backups \(app) lists them); nothing changed")
            }
            guard matches.count == 1 else { throw KbuildError(.ambiguous, "\(name) names \(matches.count) backups: give more digits; nothing changed") }
            found = matches[0]
        }
        guard found.addonKind == addon.addon else {
            throw KbuildError(.invalidArgument, "\(name) is a \(found.addonKind.rawValue) backup (of \(found.addon)), not a \(addon.addon.rawValue) one: it cannot be restored into \(addon.name); nothing changed")
        }
        return found
    }

    /// Restores a verified PostgreSQL backup over the add-on's database, in one transaction.
    func restore(_ backup: BackupRecord, into addon: AddonRecord) async throws {
        guard addon.addon == .postgres else {
            throw KbuildError(.invalidArgument, "\(addon.name) is a \(addon.addon.rawValue) add-on: kbuild restores PostgreSQL backups only; nothing changed")
        }
        guard backup.state == .verified, let dump = backup.dump else {
            throw KbuildError(.invalidArgument, "backup \(backup.id) of \(backup.addon) failed (\(backup.error ?? "")): it cannot be restored; nothing changed")
        }
        try await restoreDump(dump, id: backup.id, into: addon)
    }

    func restoreDump(_ dump: KID, id: String, into addon: AddonRecord) async throws {
        // A lock the app holds fails the restore after a minute (and changes nothing) rather than waiting for ever.
        let (connect, target) = Self.connection(addon, options: " -c lock_timeout=60s")
        let r = try await besideAddon(addon, script: "\(connect) exec pg_restore \(target) -d \(AddonRecord.database) --clean --if-exists --no-owner --exit-on-error --single-transaction",
                                      input: dump) { _ in }
        guard r.status == 0 else {
            throw KbuildError(.io, "failed to restore backup \(id) into \(addon.name) (exit status \(r.status)): \(r.stderr); its database is as it was")
        }
    }

    /// Deletes a backup's record; its dump goes at the next `keg gc` (unless another backup shares it).
    func deleteBackup(_ backup: BackupRecord, actor: String) async throws {
        guard let ref = try await refs.get(try Schema.backup(backup.addon, backup.id)) else { return }
        try await refs.compareAndSwap(ref.name, to: nil, expecting: .value(ref.kid), actor: actor)
    }
}
