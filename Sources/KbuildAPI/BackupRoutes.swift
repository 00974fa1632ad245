import Hummingbird
import CKbuild
import KbuildServer
import HTTPTypes
import Foundation
import KbuildCore
import KbuildState
import Keg
import NodeAgent
import Sandbox
import Synchronization

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
                return try await self.capture(addon, source: "capture", actor: self.actor(r))
            }
        }
        router.post(RouterPath(p + "/:backup/restore")) { r, c in
            try await self.answer {
                let (_, addon) = try await self.addon(c.parameters.get("addon") ?? "", seenBy: try await self.existing(c))
                guard r.uri.queryParameters.get("confirm") == addon.name else {
                    throw KbuildError(.invalidArgument, "refusing to restore over \(addon.name)'s data without confirmation: pass confirm=\(addon.name)")
                }
                return try await self.restore(addon, backup: c.parameters.get("backup") ?? "")
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

    /// Dumps the add-on into the Keg, restores the dump into a scratch database, and records which it came to.
    func capture(_ addon: AddonRecord, source: String, actor: String) async throws -> BackupRecord {
        guard addon.addon == .postgres else { throw KbuildError(.invalidArgument, "\(addon.name) is a \(addon.addon.rawValue) add-on: pg:backups are PostgreSQL's") }
        let started = Date()
        let (connect, target) = Self.connection(addon)
        var size: UInt64?
        var dump: KID?
        var bytes: UInt64 = 0
        var failure: String?
        var recorded: BackupRecord?
        var dumpSeconds: Double?
        var verifySeconds: Double?
        do {
            let sized = Mutex<[UInt8]>([])
            let s = try await besideAddon(addon, script: "\(connect) psql \(target) -At -c \"select pg_database_size('\(AddonRecord.database)')\" \(AddonRecord.database)") { out in
                sized.withLock { $0 += out }
            }
            guard s.status == 0 else { throw KbuildError(.io, "psql failed: \(s.stderr)") }
            size = UInt64(String(decoding: sized.withLock { $0 }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            // The dump goes into the Keg as it comes: chunked, hashed, deduplicated against the backups before it.
            let dumpStart = ContinuousClock.now
            let upload = UploadBox(KegUpload(keg: keg))
            let d = try await besideAddon(addon, script: "\(connect) exec pg_dump \(target) -Fc -Z0 \(AddonRecord.database)") { out in
                try upload.lock.withLock { _ in try out.withUnsafeBytes { try upload.value.append($0) } }
            }
            guard d.status == 0 else { throw KbuildError(.io, "pg_dump failed (exit status \(d.status)): \(d.stderr)") }
            let kid = try upload.lock.withLock { _ -> KID in
                let kid = try upload.value.seal()
                try upload.value.commit()
                return kid
            }
            bytes = upload.lock.withLock { _ in upload.value.size }
            dump = kid
            dumpSeconds = Self.seconds(since: dumpStart)
            // Recorded now, as not verified yet: the record keeps the dump from gc, and a capture cut short says so.
            recorded = try await recordBackup(addon, dump: kid, size: bytes, databaseSize: size, state: .failed,
                                              error: "its test restore did not finish (kbuild stopped during it)", source: source, actor: actor,
                                              started: started, dumpSeconds: dumpSeconds, verifySeconds: nil)
            // Room on the add-on's volume for a second copy, beside the live database.
            if let size, let volume = try? await volumeInfo(addon.name, addon.volume), let used = volume.used {
                let free = volume.record.size > used ? volume.record.size - used : 0
                guard size + size / 4 < free else {
                    throw KbuildError(.tooLarge, "its test restore needs about \(formatMemory(size)) on volume \(addon.volume), which has \(formatMemory(free)) free: the database is not copied onto a full disk (a larger volume is a new add-on for now)")
                }
            }
            let verifyStart = ContinuousClock.now
            // The test restore: with the flags a restore has, into a database of its own, dropped after whatever came of it
            // (and any a capture cut short left).
            let scratch = "kbuild_verify_\(UInt32.random(in: 0...UInt32.max))"
            let verify = """
                for old in $(\(connect) psql \(target) -At -c "select datname from pg_database where datname like 'kbuild_verify_%'" \(AddonRecord.database)); do
                  \(connect) psql \(target) -q -c "drop database $old" \(AddonRecord.database)
                done
                \(connect) psql \(target) -q -c 'create database \(scratch)' \(AddonRecord.database) || exit 3
                \(connect) pg_restore \(target) -d \(scratch) --no-owner --exit-on-error --single-transaction; rc=$?
                \(connect) psql \(target) -q -c 'drop database \(scratch)' \(AddonRecord.database)
                exit $rc
                """
            let v = try await besideAddon(addon, script: verify, input: kid) { _ in }
            verifySeconds = Self.seconds(since: verifyStart)
            guard v.status == 0 else { throw KbuildError(.io, "its test restore into a scratch database failed (exit status \(v.status)): \(v.stderr)") }
        } catch {
            failure = (error as? KbuildError)?.message ?? "\(error)"
        }
        if var record = recorded {
            // The verdict, over the record made before the test restore.
            record.state = failure == nil ? .verified : .failed
            record.error = failure
            record.verifySeconds = verifySeconds
            record.finishedAt = Date()
            try await refs.set(try Schema.backup(addon.name, record.id), to: try await Records.put(record, in: keg), actor: actor)
            return record
        }
        return try await recordBackup(addon, dump: dump, size: bytes, databaseSize: size, state: .failed, error: failure, source: source, actor: actor,
                                      started: started, dumpSeconds: dumpSeconds, verifySeconds: verifySeconds)
    }

    /// A new backup record, numbered after those there are (a capture beside this one takes the next number).
    func recordBackup(_ addon: AddonRecord, dump: KID?, size: UInt64, databaseSize: UInt64?, state: BackupRecord.State, error: String?, source: String,
                      actor: String, started: Date, dumpSeconds: Double?, verifySeconds: Double?) async throws -> BackupRecord {
        for _ in 0..<20 {
            let n = (try await backups(addon.name).compactMap { BackupRecord.number($0.id) }.max() ?? 0) + 1
            var record = BackupRecord(id: BackupRecord.id(n), addon: addon.name, addonKind: addon.addon, version: addon.version, dump: dump, size: size,
                                      databaseSize: databaseSize, state: state, error: error, source: source, createdBy: actor, createdAt: started)
            record.dumpSeconds = dumpSeconds
            record.verifySeconds = verifySeconds
            do {
                try await refs.compareAndSwap(try Schema.backup(addon.name, record.id), to: try await Records.put(record, in: keg), expecting: .absent, actor: actor)
                return record
            } catch let e as KbuildError where e.code == .conflict {
                continue
            }
        }
        throw KbuildError(.conflict, "failed to record a backup of \(addon.name): too many at once")
    }

    /// What psql, pg_dump and pg_restore beside an add-on start with: its password from its config, TLS; and its address and role.
    static func connection(_ addon: AddonRecord) -> (environment: String, target: String) {
        ("PGPASSWORD=\"$KBUILD_ADDON_PASSWORD\" PGSSLMODE=require", "-h \(addon.service.address) -p \(addon.service.port) -U \(AddonRecord.user)")
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// Restores a verified backup over the add-on's database.
    func restore(_ addon: AddonRecord, backup id: String) async throws -> BackupRecord {
        let backup = try await backup(addon.name, id)
        guard backup.addonKind == addon.addon, backup.addonKind == .postgres else {
            throw KbuildError(.invalidArgument, "backup \(id) is a \(backup.addonKind.rawValue) backup, not a PostgreSQL one; nothing changed")
        }
        guard backup.state == .verified, let dump = backup.dump else {
            throw KbuildError(.invalidArgument, "backup \(id) of \(addon.name) failed (\(backup.error ?? "")): it cannot be restored; nothing changed")
        }
        let (connect, target) = Self.connection(addon)
        // A lock the app holds fails the restore after a minute (and changes nothing) rather than waiting for ever.
        let r = try await besideAddon(addon, script: "PGOPTIONS='-c lock_timeout=60s' \(connect) exec pg_restore \(target) -d \(AddonRecord.database) --clean --if-exists --no-owner --exit-on-error --single-transaction",
                                      input: dump) { _ in }
        guard r.status == 0 else { throw KbuildError(.io, "failed to restore backup \(id) into \(addon.name) (exit status \(r.status)): \(r.stderr); its database is as it was") }
        return backup
    }

    /// Runs `script` beside an add-on: a one-off of its app on this server (its image, its config, a network of its own
    /// that reaches the add-on), `input` (a Keg object) on its stdin, its stdout to `output`. Returns its exit status and
    /// the end of its stderr.
    func besideAddon(_ addon: AddonRecord, script: String, input: KID? = nil,
                     output: @escaping @Sendable ([UInt8]) throws -> Void) async throws -> (status: Int32, stderr: String) {
        guard let sandbox else { throw KbuildError(.unsatisfiable, "this kbuild runs no processes (no sandbox)") }
        guard let current = try await releases.current(addon.name) else { throw KbuildError(.notFound, "add-on \(addon.name) has no release") }
        let launch = try await ProcessLaunch.prepare(release: current.kid, image: current.release.image, config: current.release.config, app: addon.name,
                                                     name: "backup.1", id: "\(addon.name).backup", port: nil, reader: reader, images: keg, remote: nil)
        let held = try await egress?.makeHeld()
        var stdinRead: Int32 = -1
        var feeder: Thread?
        do {
            if let held { try await egress?.grant(held.link, current.release.reaches ?? []) }
            if let input {
                var fds: [Int32] = [-1, -1]
                guard kb_pipe_cloexec(&fds) == 0 else { throw KbuildError.syscall("pipe2", "a backup's input", verb: "restore") }
                stdinRead = fds[0]
                let write = fds[1]
                let reader = try ObjectReader(keg: keg, kid: input)
                // Fed on a thread of its own (a write to a full pipe blocks); a reader that exits early ends it (EPIPE).
                feeder = Thread {
                    defer { close(write) }
                    try? reader.forEachPiece { piece in
                        try piece.withUnsafeBytes { buffer in
                            var done = 0
                            while done < buffer.count {
                                let n = Glibc.write(write, buffer.baseAddress! + done, buffer.count - done)
                                if n < 0 && errno == EINTR { continue }
                                guard n > 0 else { throw KbuildError.syscall("write", "a backup's input", verb: "restore") }
                                done += n
                            }
                        }
                    }
                }
                feeder?.start()
            }
            let spec = SandboxSpec(command: ["/bin/sh", "-c", script], lowerDirs: launch.lowerDirs, environment: launch.environment,
                                   workingDirectory: "/", hostname: "backup", mounts: held != nil ? EgressNetwork.hostFiles() : [],
                                   network: held.map { .namespace("/run/netns/" + $0.link.namespace) } ?? .none,
                                   limits: SandboxLimits(memory: 512 << 20, pids: 256, cpus: 1, timeout: .seconds(6 * 3600)),
                                   stdin: stdinRead >= 0 ? .fd(stdinRead) : .null)
            let errors = Mutex<[UInt8]>([])
            let failed = Mutex<(any Error)?>(nil)
            let result = try await sandbox.run(spec) { stream, bytes in
                if stream == .stderr {
                    errors.withLock { $0 = Array(($0 + bytes).suffix(16 << 10)) }
                } else if failed.withLock({ $0 == nil }) {
                    do { try output(bytes) } catch { failed.withLock { $0 = error } }
                }
            }
            if stdinRead >= 0 { close(stdinRead); stdinRead = -1 }
            if let held { await egress?.remove(held) }
            if let error = failed.withLock({ $0 }) { throw error }
            let text = String(decoding: errors.withLock { $0 }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return (result.exitStatus, text.isEmpty ? result.summary : text)
        } catch {
            if stdinRead >= 0 { close(stdinRead) }
            if let held { await egress?.remove(held) }
            throw error
        }
    }
}

/// A `KegUpload` fed from the sandbox's output callback (one caller at a time, under the lock).
final class UploadBox: @unchecked Sendable {
    let value: KegUpload
    let lock = Mutex<Void>(())
    init(_ value: KegUpload) { self.value = value }
}
