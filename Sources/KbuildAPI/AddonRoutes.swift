import Hummingbird
import Foundation
import KbuildCore
import KbuildState
import KbuildServer
import Releases
import Stacks
import GitGateway
import OCI
import Keg

/// Add-ons (`addons:*`): a PostgreSQL or Redis server that runs as an
/// ordinary app of its own (`OWNER-postgres`), from an add-on stack, on a
/// volume of that app, at a service address (`ServiceAddress`) that the apps
/// attached to it reach, and only they. Attaching sets `AS_URL` in the app's
/// config and opens its processes' network to the add-on: one release.
extension APIRoutes {
    func registerAddons(on router: Router<Context>) {
        registerBackups(on: router)
        let p = "/api/v1/apps/:app"
        router.get(RouterPath(p + "/addons")) { _, c in
            try await self.answer {
                let app = try await self.existing(c)
                return try await self.addonRecords().filter { Self.concerns($0, app) }.asyncMap { try await self.addonInfo($0) }
            }
        }
        router.post(RouterPath(p + "/addons")) { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                return try await self.createAddon(owner: app, try await self.decode(API.AddonCreate.self, r, c), actor: self.actor(r))
            }
        }
        router.get(RouterPath(p + "/addons/:addon")) { _, c in
            try await self.answer {
                let app = try await self.existing(c)
                return try await self.addonInfo(try await self.addon(c.parameters.get("addon") ?? "", seenBy: app).record)
            }
        }
        router.delete(RouterPath(p + "/addons/:addon")) { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let q = r.uri.queryParameters
                return try await self.destroyAddon(c.parameters.get("addon") ?? "", owner: app, confirm: q.get("confirm"), force: q.get("force") == "1",
                                                   actor: self.actor(r))
            }
        }
        router.post(RouterPath(p + "/addons/:addon/credentials")) { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                return try await self.rotateCredentials(c.parameters.get("addon") ?? "", owner: app, actor: self.actor(r))
            }
        }
        router.post(RouterPath(p + "/addons/:addon/upgrade")) { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let body = try await self.decode(API.AddonUpgrade.self, r, c)
                return try await self.upgradeAddon(c.parameters.get("addon") ?? "", owner: app, to: body.version, actor: self.actor(r))
            }
        }
        router.post(RouterPath(p + "/attachments")) { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let body = try await self.decode(API.AddonAttach.self, r, c)
                return try await self.attach(body.addon, to: app, as: body.as, scope: self.scope(r), actor: self.actor(r))
            }
        }
        router.delete(RouterPath(p + "/attachments/:name")) { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                return try await self.detach(c.parameters.get("name") ?? "", from: app, actor: self.actor(r))
            }
        }
    }

    /// The apps an app token may act on (nil: the admin token).
    func scope(_ request: Request) -> [String]? {
        request.headers[TokenAuthMiddleware<Context>.scopeHeader].map { $0.split(separator: ",").map(String.init) }
    }

    /// Whether `app` owns the add-on, is it, or is attached to it.
    static func concerns(_ addon: AddonRecord, _ app: String) -> Bool {
        addon.owner == app || addon.name == app || addon.attachments.contains { $0.app == app }
    }

    // MARK: - Reading

    func addonRecords() async throws -> [AddonRecord] {
        var out: [AddonRecord] = []
        for ref in try await refs.list(prefix: Schema.addons) {
            guard case .addon = Schema.Key(ref.name) else { continue }
            out.append(try await reader.record(AddonRecord.self, ref.kid, what: "add-on"))
        }
        return out.sorted { $0.name < $1.name }
    }

    /// An add-on `app` may see (one answer for another app's and for none at all).
    func addon(_ name: String, seenBy app: String) async throws -> (kid: KID, record: AddonRecord) {
        let notFound = KbuildError(.notFound, "\(app) has no add-on \(name.debugQuoted) (kbuild addons \(app) lists them)")
        guard Names.isAppName(name), let ref = try await refs.get(try Schema.addon(name)) else { throw notFound }
        let record = try await reader.record(AddonRecord.self, ref.kid, what: "add-on")
        guard Self.concerns(record, app) else { throw notFound }
        return (ref.kid, record)
    }

    func addonInfo(_ record: AddonRecord) async throws -> API.AddonInfo {
        let now = Date()
        for node in try await reader.nodes() {
            guard let p = node.status?.processes.first(where: { $0.app == record.name && $0.state != .stopping }) else { continue }
            let alive = node.record.isAlive(reporting: node.status, at: now)
            return API.AddonInfo(record: record, state: alive ? p.state.rawValue : "unavailable: node \(node.record.name) is not reporting",
                                 node: node.record.name)
        }
        let rollout: RolloutRecord? = if let ref = try await refs.get(try Schema.rollout(record.name)) {
            try? await reader.record(RolloutRecord.self, ref.kid, what: "rollout")
        } else { nil }
        if let rollout, rollout.state == .unschedulable { return API.AddonInfo(record: record, state: "unavailable: \(rollout.reason ?? "")", node: nil) }
        return API.AddonInfo(record: record, state: "not running", node: nil)
    }

    // MARK: - Making and destroying

    /// With `attaching` false (an upgrade's new instance), it is attached to nothing yet.
    func createAddon(owner: String, _ body: API.AddonCreate, attaching: Bool = true, actor: String) async throws -> API.AddonInfo {
        let kind = try AddonKind(parsing: body.kind)
        let attachment = body.as ?? kind.defaultAs
        try AddonRecord.check(attachmentName: attachment)
        if attaching { try await checkAttachmentFree(attachment, app: owner) }
        let stacks = StackStore(keg: keg, refs: refs)
        // Without --stack: the newest add-on stack here.
        var stackName = body.stack ?? ""
        if body.stack == nil {
            for candidate in [StackStore.Builtin.debian13Addons, .debian12Addons] where try await refs.get(try Schema.stack(candidate.rawValue)) != nil {
                stackName = candidate.rawValue
                break
            }
            guard !stackName.isEmpty else {
                throw KbuildError(.notFound, "no add-on stack here: make one with kbuild stack create debian-12-addons (PostgreSQL 15, Redis 7) or debian-13-addons (PostgreSQL 17, Redis 8)")
            }
        }
        let stack: Stack
        do {
            stack = try await stacks.get(stackName)
        } catch let e as KbuildError where e.code == .notFound || e.code == .invalidArgument {
            throw KbuildError(.notFound, "no add-on stack \(stackName.debugQuoted) here: make it with kbuild stack create \(stackName)")
        }
        let labels = try ImageStore(keg: keg).config(of: stack.manifest).config?.Labels ?? [:]
        guard let version = labels["dev.kbuild.addon.\(kind.rawValue)"] else {
            throw KbuildError(.invalidArgument, "stack \(stackName) is not an add-on stack (it has no \(kind.rawValue)): use debian-12-addons or debian-13-addons")
        }
        let size = body.size ?? 1 << 30
        guard (VolumeRecord.minimumSize...VolumeRecord.maximumSize).contains(size) else {
            throw KbuildError(.invalidArgument, "invalid add-on size \(size) bytes: at least \(formatMemory(VolumeRecord.minimumSize))")
        }
        // Its name: OWNER-KIND, or OWNER-KIND-2, … (an app name of its own).
        var name = ""
        for n in 1...50 {
            let candidate = "\(owner)-\(kind.rawValue)" + (n == 1 ? "" : "-\(n)")
            guard candidate.utf8.count <= 63 else { break }
            // Not a name whose last add-on's volume is still being deleted.
            if try await refs.get(try Schema.app(candidate)) == nil, try await refs.get(try Schema.addon(candidate)) == nil,
               try await refs.list(prefix: try Schema.volumes(candidate)).isEmpty {
                name = candidate
                break
            }
        }
        guard !name.isEmpty else { throw KbuildError(.conflict, "failed to name a \(kind.rawValue) add-on of \(owner): too many, or its name too long") }
        // Its service address: one no other add-on has.
        let taken = Set(try await addonRecords().map(\.service.address))
        let start = Int(KID(hashing: Data(name.utf8)).hex.prefix(6), radix: 16)!
        guard let address = (0..<2048).lazy.map({ ServiceAddress.address(start + $0) }).first(where: { !taken.contains($0) }) else {
            throw KbuildError(.unsatisfiable, "no service address is free for another add-on")
        }
        let service = ServiceAddress(address: address, port: kind.port)

        _ = try await apps.create(API.CreateApp(name: name, stack: stackName), kbuild: kbuild, actor: actor)
        do {
            let password = Self.newAddonPassword()
            var vars = ["KBUILD_ADDON_PASSWORD": password]
            if kind == .postgres {
                let tls = try ServerTLS.selfSigned(commonName: name, hosts: [address])
                vars["KBUILD_ADDON_TLS_CERT"] = tls.certificate
                vars["KBUILD_ADDON_TLS_KEY"] = tls.key
            }
            try await refs.set(try Schema.config(name), to: try await Records.put(ConfigVars(vars), in: keg), actor: actor)
            let volume = try await createVolume(name, API.VolumeCreate(name: "data", size: size), actor: actor)
            guard volume.state == "ready" else {
                throw KbuildError(.io, "failed to make the add-on's volume: it is \(volume.state) on node \(volume.record.node)")
            }
            var release = Release(app: name, version: 1, image: stack.image, config: try await releases.configKID(name),
                                  processTypes: [kind.processType: kind.command],
                                  formation: [kind.processType: ProcessFormation(quantity: 1)],
                                  healthchecks: [kind.processType: HealthCheck(path: nil, timeout: 2, initialDelay: 1, attempts: 60)],
                                  description: "Create \(kind.rawValue) \(version) add-on for \(owner)", createdBy: actor)
            release.mounts = [VolumeMount(volume: "data", id: volume.record.id, node: volume.record.node, path: "/data")]
            release.serves = service
            release.reaches = [service]
            try await checkFits(release)
            let record = AddonRecord(name: name, addon: kind, owner: owner, stack: stackName, version: version, service: service, volume: "data",
                                     attachments: [], createdBy: actor)
            try await refs.compareAndSwap(try Schema.addon(name), to: try await Records.put(record, in: keg), expecting: .absent, actor: actor)
            _ = try await releases.create(release, actor: actor)
        } catch {
            // Nothing half-made stays: its app, volume and record go.
            _ = try? await refs.compareAndSwap(try Schema.addon(name), to: nil, expecting: .any, actor: actor)
            _ = try? await destroy(name, confirm: name, volumes: true, addon: true)
            throw error
        }
        if attaching { _ = try await attach(name, to: owner, as: attachment, scope: nil, actor: actor) }
        // Ready to use when this answers: wait (bounded) for its server.
        let deadline = Date().addingTimeInterval(40)
        var info = try await addonInfo(try await addon(name, seenBy: owner).record)
        while Date() < deadline && info.state != ProcessState.healthy.rawValue {
            try await Task.sleep(for: .milliseconds(250))
            info = try await addonInfo(try await addon(name, seenBy: owner).record)
        }
        return info
    }

    /// `AS` is not an attachment of `app` yet and `AS_URL` is not a config var of it.
    func checkAttachmentFree(_ name: String, app: String) async throws {
        let variable = AddonAttachment(app: app, name: name).variable
        if let ref = try await refs.get(try Schema.config(app)),
           try await reader.record(ConfigVars.self, ref.kid, what: "config").vars[variable] != nil {
            throw KbuildError(.conflict, "\(app) has a config var \(variable) already: choose another name with --as; nothing changed")
        }
    }

    func attach(_ addonName: String, to app: String, as name: String?, scope: [String]?, actor: String) async throws -> API.AddonInfo {
        guard Names.isAppName(addonName), let ref = try await refs.get(try Schema.addon(addonName)) else {
            throw KbuildError(.notFound, "no add-on \(addonName.debugQuoted) (kbuild addons APP lists an app's)")
        }
        let addon = try await reader.record(AddonRecord.self, ref.kid, what: "add-on")
        // An app token attaches only add-ons of the apps it has: another tenant's database is not its to open.
        if let scope, !scope.contains(addon.owner) {
            throw KbuildError(.notFound, "no add-on \(addonName.debugQuoted) (kbuild addons APP lists an app's)")
        }
        let attachment = AddonAttachment(app: app, name: name ?? addon.addon.defaultAs)
        try AddonRecord.check(attachmentName: attachment.name)
        try await checkAttachmentFree(attachment.name, app: app)
        let password = try await addonPassword(addon)
        let updated = try await refs.update(try Schema.addon(addonName), as: AddonRecord.self, in: keg, what: "add-on", actor: actor) { old in
            guard var a = old else { throw KbuildError(.notFound, "add-on \(addonName) was destroyed meanwhile") }
            if a.attachments.contains(where: { $0.app == app && $0.name == attachment.name }) {
                throw KbuildError(.conflict, "\(addonName) is attached to \(app) as \(attachment.name) already")
            }
            a.attachments.append(attachment)
            return a
        }
        _ = try await releases.changeAttachments(app: app, set: [attachment.variable: addon.url(password: password)], unset: [],
                                                 description: "Attach \(addonName) as \(attachment.name)", actor: actor)
        return try await addonInfo(updated.record ?? addon)
    }

    func detach(_ name: String, from app: String, actor: String) async throws -> API.AddonInfo {
        let addons = try await addonRecords()
        guard let addon = addons.first(where: { $0.attachments.contains { $0.app == app && $0.name == name } }) else {
            throw KbuildError(.notFound, "\(app) has no add-on attached as \(name.debugQuoted) (kbuild addons \(app))")
        }
        let attachment = AddonAttachment(app: app, name: name)
        let updated = try await refs.update(try Schema.addon(addon.name), as: AddonRecord.self, in: keg, what: "add-on", actor: actor) { old in
            guard var a = old else { return old }
            a.attachments.removeAll { $0 == attachment }
            return a
        }
        _ = try await releases.changeAttachments(app: app, set: [:], unset: [attachment.variable],
                                                 description: "Detach \(addon.name) (\(name))", actor: actor)
        return try await addonInfo(updated.record ?? addon)
    }

    /// The password of an add-on, from its app's config (never from a record).
    func addonPassword(_ addon: AddonRecord) async throws -> String {
        guard let ref = try await refs.get(try Schema.config(addon.name)),
              let password = try await reader.record(ConfigVars.self, ref.kid, what: "config").vars["KBUILD_ADDON_PASSWORD"] else {
            throw KbuildError(.corrupt, "add-on \(addon.name) has no password in its config")
        }
        return password
    }

    func destroyAddon(_ name: String, owner: String, confirm: String?, force: Bool, actor: String) async throws -> [String: String] {
        let (_, addon) = try await addon(name, seenBy: owner)
        guard addon.owner == owner else { throw KbuildError(.forbidden, "\(name) is \(addon.owner)'s add-on: only its owner destroys it") }
        guard confirm == name else {
            throw KbuildError(.invalidArgument, "refusing to destroy add-on \(name) without confirmation: pass confirm=\(name)")
        }
        if !addon.attachments.isEmpty && !force {
            let list = addon.attachments.map { "\($0.app) as \($0.name)" }.joined(separator: ", ")
            throw KbuildError(.conflict, "add-on \(name) is attached to \(list): detach it, or destroy it with --force (each of those apps gets a new release); nothing was deleted")
        }
        for a in addon.attachments { _ = try await detach(a.name, from: a.app, actor: actor) }
        _ = try await destroy(name, confirm: name, volumes: true, addon: true)
        // Its backups go with it: a later add-on of this name starts with none of this one's.
        for ref in try await refs.list(prefix: try Schema.backups(name)) {
            _ = try? await refs.compareAndSwap(ref.name, to: nil, expecting: .value(ref.kid), actor: actor)
        }
        _ = try? await refs.compareAndSwap(try Schema.addon(name), to: nil, expecting: .any, actor: actor)
        return ["destroyed": name]
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await transform(e)) }
        return out
    }
}
