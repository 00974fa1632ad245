import Foundation
import KbuildCore
import KbuildState
import OCI
import Stacks

/// An add-on over its life: a new password (`addons:rotate-credentials`) and
/// a new major version (`addons:upgrade`), each ending in a new release of
/// every app attached to it.
extension APIRoutes {
    /// 32 hex digits from the system's random source.
    static func newAddonPassword() -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
    }

    /// A new password: the add-on's app gets a new release (its server restarts and takes it), then every
    /// attached app one with the new URL. Connections made with the old password fail from the restart on.
    func rotateCredentials(_ name: String, owner: String, actor: String) async throws -> API.AddonInfo {
        let (_, addon) = try await addon(name, seenBy: owner)
        guard addon.owner == owner else { throw KbuildError(.forbidden, "\(name) is \(addon.owner)'s add-on: only its owner may rotate its credentials") }
        let password = Self.newAddonPassword()
        try await releases.setOwnConfig(app: addon.name, set: ["KBUILD_ADDON_PASSWORD": password], description: "Rotate the password", actor: actor)
        for a in addon.attachments {
            _ = try await releases.changeAttachments(app: a.app, set: [a.variable: addon.url(password: password)], unset: [],
                                                     description: "Rotate the credentials of \(addon.name) (\(a.name))", actor: actor)
        }
        return try await addonInfo(addon)
    }

    /// A PostgreSQL add-on on another major version: a new instance on the add-on stack that has it; the old one made
    /// read-only (its sessions ended, so no write is lost between the dump and the switch); a verified backup of it
    /// restored into the new one; then every attachment moved (a new release of each app). The old instance stays,
    /// read-only and attached to nothing, until its owner destroys it. A failure leaves the old one as it was.
    func upgradeAddon(_ name: String, owner: String, to version: String, actor: String) async throws -> API.AddonInfo {
        let (_, old) = try await addon(name, seenBy: owner)
        guard old.owner == owner else { throw KbuildError(.forbidden, "\(name) is \(old.owner)'s add-on: only its owner may upgrade it") }
        guard old.addon == .postgres else {
            throw KbuildError(.invalidArgument, "\(name) is a \(old.addon.rawValue) add-on: addons:upgrade moves PostgreSQL between major versions")
        }
        guard let wanted = Int(version), wanted > 0, String(wanted) == version else {
            throw KbuildError(.invalidArgument, "invalid --version \(version.debugQuoted): want a PostgreSQL major version such as 17")
        }
        guard let current = Int(old.version), wanted > current else {
            throw KbuildError(.invalidArgument, "\(name) runs PostgreSQL \(old.version): an upgrade goes to a later major version, not \(version)")
        }
        // The add-on stack that has it.
        let images = ImageStore(keg: keg)
        var offered: [String: String] = [:]
        for stack in try await StackStore(keg: keg, refs: refs).list() {
            if let v = try? images.config(of: stack.manifest).config?.Labels?["dev.kbuild.addon.postgres"] { offered[stack.name] = v }
        }
        guard let stack = offered.filter({ $0.value == version }).keys.sorted().first else {
            let list = offered.sorted { $0.key < $1.key }.map { "\($0.key) has \($0.value)" }.joined(separator: ", ")
            throw KbuildError(.notFound, "no add-on stack here has PostgreSQL \(version) (\(list.isEmpty ? "none has PostgreSQL" : list)): kbuild stack create debian-13-addons makes one with 17")
        }
        return try await addonsBusy.holding(old.name, doing: "an upgrade") {
            try await upgrading(old, owner: owner, to: version, stack: stack, actor: actor)
        }
    }

    private func upgrading(_ old: AddonRecord, owner: String, to version: String, stack: String, actor: String) async throws -> API.AddonInfo {
        let name = old.name
        let size = try await volumeInfo(old.name, old.volume).record.size
        var fresh = try await createAddon(owner: owner, API.AddonCreate(kind: AddonKind.postgres.rawValue, stack: stack, size: size), attaching: false, actor: actor)
        var madeReadOnly = false
        do {
            // A first start on a large volume may take longer than addons:create waits: up to two minutes more here.
            let deadline = Date().addingTimeInterval(120)
            while fresh.state != ProcessState.healthy.rawValue && Date() < deadline && !fresh.state.hasPrefix("unavailable") {
                try await Task.sleep(for: .seconds(1))
                fresh = try await addonInfo(try await addon(fresh.record.name, seenBy: owner).record)
            }
            guard fresh.state == ProcessState.healthy.rawValue else { throw KbuildError(.io, "its new instance \(fresh.record.name) is \(fresh.state)") }
            madeReadOnly = true
            try await setReadOnly(old, true)
            // The dump's restore into the new instance is its test: verified only if that succeeded.
            let backup = try await capturePostgres(old, source: BackupRecord.Source.upgrade, actor: actor, restoringInto: fresh.record)
            guard backup.state == .verified else { throw KbuildError(.io, "its backup \(backup.id) failed: \(backup.error ?? "")") }
        } catch {
            var after = "\(name) is as it was (writable, attached as before)"
            do { if madeReadOnly { try await setReadOnly(old, false) } } catch {
                after = "\(name) is attached as before but still read-only (\(Self.reason(error))): kbuild pg:psql \(owner) \(name) -c 'alter database kbuild reset default_transaction_read_only'"
            }
            _ = try? await destroyAddon(fresh.record.name, owner: owner, confirm: fresh.record.name, force: true, actor: actor)
            throw KbuildError(.io, "failed to upgrade \(name) to PostgreSQL \(version): \(Self.reason(error)); \(after)")
        }
        // The switch: the records first (an app's release reaches what its records attach), then one release per app.
        // The attachments moved are those there are now (one made or removed during the dump counts).
        var moved = old.attachments
        var schedule = old.schedule
        try await refs.update(try Schema.addon(old.name), as: AddonRecord.self, in: keg, what: "add-on", actor: actor) { record in
            guard var a = record else { throw KbuildError(.notFound, "add-on \(name) was destroyed meanwhile") }
            (moved, schedule) = (a.attachments, a.schedule)
            a.attachments = []
            a.schedule = nil
            return a
        }
        let updated = try await refs.update(try Schema.addon(fresh.record.name), as: AddonRecord.self, in: keg, what: "add-on", actor: actor) { record in
            guard var a = record else { throw KbuildError(.notFound, "add-on \(fresh.record.name) was destroyed meanwhile") }
            a.attachments = moved
            a.schedule = schedule
            a.upgradedFrom = old.name
            return a
        }
        let password = try await addonPassword(fresh.record)
        var failed: [String] = []
        for a in moved {
            do {
                _ = try await releases.changeAttachments(app: a.app, set: [a.variable: fresh.record.url(password: password)], unset: [],
                                                         description: "Upgrade \(a.name) to PostgreSQL \(version) (\(old.name) → \(fresh.record.name))", actor: actor)
            } catch {
                failed.append("\(a.app) (\(Self.reason(error)))")
            }
        }
        guard failed.isEmpty else {
            throw KbuildError(.io, "upgraded \(name) to \(fresh.record.name), but these apps did not get their new release: \(failed.joined(separator: "; ")); set their URL again with kbuild addons:detach and addons:attach")
        }
        return try await addonInfo(updated.record ?? fresh.record)
    }

    /// Makes the add-on's database read-only for new transactions and ends the app's sessions (or makes it writable again).
    func setReadOnly(_ addon: AddonRecord, _ readOnly: Bool) async throws {
        let (connect, target) = Self.connection(addon)
        var sql = ["alter database \(AddonRecord.database) set default_transaction_read_only = \(readOnly ? "on" : "off")"]
        if readOnly {
            sql.append("select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = '\(AddonRecord.database)' and pid <> pg_backend_pid()")
        }
        let r = try await besideAddon(addon, script: "\(connect) psql \(target) -q -v ON_ERROR_STOP=1 \(sql.map { "-c \"\($0)\"" }.joined(separator: " ")) \(AddonRecord.database) >/dev/null") { _ in }
        guard r.status == 0 else { throw KbuildError(.io, "failed to make \(addon.name) \(readOnly ? "read-only" : "writable"): \(r.stderr)") }
    }
}
