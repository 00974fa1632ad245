import Hummingbird
import Foundation
import KbuildCore
import KbuildState
import Releases
import Scheduler
import Cluster
import KbuildServer

/// Volumes (`volumes:*`): a volume record is made here and its node makes
/// the disk (it is in the node's assignment); these routes wait for the
/// node's word, so `volumes:create` answers with a volume that is there or
/// with the reason it is not.
extension APIRoutes {
    func registerVolumes(on router: Router<Context>) {
        let p = "/api/v1/apps/:app/volumes"
        router.get(RouterPath(p)) { _, c in try await self.answer { try await self.volumeInfos(try await self.existing(c)) } }
        router.post(RouterPath(p)) { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let body = try await self.decode(API.VolumeCreate.self, r, c)
                // Which node is the admin's to say: an app token's volume goes where there is room.
                if body.node != nil, r.headers[TokenAuthMiddleware<Context>.tokenNameHeader] != nil {
                    throw KbuildError(.forbidden, "only the admin token may choose a volume's node (--node)")
                }
                return try await self.createVolume(app, body, actor: self.actor(r))
            }
        }
        router.get(RouterPath(p + "/:volume")) { _, c in
            try await self.answer { try await self.volumeInfo(try await self.existing(c), c.parameters.get("volume") ?? "") }
        }
        router.post(RouterPath(p + "/:volume/mount")) { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let body = try await self.decode(API.VolumeMountRequest.self, r, c)
                return API.ReleaseInfo(try await self.mountVolume(app, c.parameters.get("volume") ?? "", body, actor: self.actor(r)), status: "current")
            }
        }
        router.post(RouterPath(p + "/:volume/unmount")) { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                return API.ReleaseInfo(try await self.unmountVolume(app, c.parameters.get("volume") ?? "", actor: self.actor(r)), status: "current")
            }
        }
        router.delete(RouterPath(p + "/:volume")) { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let name = c.parameters.get("volume") ?? ""
                return try await self.destroyVolume(app, name, confirm: r.uri.queryParameters.get("confirm"), actor: self.actor(r))
            }
        }
    }

    // MARK: - Reading

    func volumeRecords(_ app: String) async throws -> [VolumeRecord] {
        var out: [VolumeRecord] = []
        for ref in try await refs.list(prefix: try Schema.volumes(app)) {
            guard case .volume(app, _) = Schema.Key(ref.name) else { continue }
            out.append(try await reader.record(VolumeRecord.self, ref.kid, what: "volume"))
        }
        return out.sorted { $0.name < $1.name }
    }

    func volumeRecord(_ app: String, _ name: String) async throws -> (kid: KID, record: VolumeRecord) {
        try VolumeRecord.check(name: name)
        guard let ref = try await refs.get(try Schema.volume(app, name)) else {
            throw KbuildError(.notFound, "\(app) has no volume \(name) (kbuild volumes \(app) lists them)")
        }
        return (ref.kid, try await reader.record(VolumeRecord.self, ref.kid, what: "volume"))
    }

    func volumeInfos(_ app: String) async throws -> [API.VolumeInfo] {
        let records = try await volumeRecords(app)
        guard !records.isEmpty else { return [] }
        let nodes = try await reader.nodes()
        let mounts = try await releases.current(app)?.release.mounts ?? []
        return records.map { Self.info($0, nodes: nodes, mounts: mounts) }
    }

    func volumeInfo(_ app: String, _ name: String) async throws -> API.VolumeInfo {
        let (_, record) = try await volumeRecord(app, name)
        let mounts = try await releases.current(app)?.release.mounts ?? []
        return Self.info(record, nodes: try await reader.nodes(), mounts: mounts)
    }

    /// The record with its node's word on it: a pure reading.
    static func info(_ v: VolumeRecord, nodes: [(record: NodeRecord, status: NodeStatus?, assignment: Assignment?)], mounts: [VolumeMount]) -> API.VolumeInfo {
        let node = nodes.first { $0.record.name == v.node }
        let status = node?.status?.volumes?.first { $0.id == v.id }
        let alive = node.map { $0.record.isAlive(reporting: $0.status, at: Date()) } ?? false
        let state: String = switch (v.state, status?.state) {
        case (.destroying, _): "destroying"
        case (.active, _) where !alive: "unknown (node \(v.node) is not reporting)"
        case (.active, .ready?): "ready"
        case (.active, .failed?): "failed"
        case (.active, .removed?), (.active, nil): "creating"
        }
        return API.VolumeInfo(record: v, state: state, used: status?.used, error: status?.error, mounts: mounts.filter { $0.id == v.id })
    }

    // MARK: - Changing

    func createVolume(_ app: String, _ body: API.VolumeCreate, actor: String) async throws -> API.VolumeInfo {
        try VolumeRecord.check(name: body.name)
        guard (VolumeRecord.minimumSize...VolumeRecord.maximumSize).contains(body.size) else {
            throw KbuildError(.invalidArgument, "invalid volume size \(body.size) bytes: at least \(formatMemory(VolumeRecord.minimumSize)), at most \(formatMemory(VolumeRecord.maximumSize))")
        }
        let existing = try await volumeRecords(app)
        if existing.contains(where: { $0.name == body.name }) {
            throw KbuildError(.conflict, "\(app) has a volume \(body.name) already")
        }
        guard existing.count < VolumeRecord.maximumPerApp else {
            throw KbuildError(.tooLarge, "\(app) has \(existing.count) volumes, as many as an app may have; nothing was made")
        }
        // Each at most maximumSize, at most maximumPerApp of them: the sum cannot overflow.
        try await AppLimits.get(app, keg: keg, refs: refs).check(volumeBytes: existing.reduce(body.size) { $0 + $1.size }, app: app)
        let node = try await chooseVolumeNode(size: body.size, asked: body.node)
        let id = "\(app)-\(body.name)-\(KID(hashing: Data(UUID().uuidString.utf8)).hex.prefix(8))"
        let record = VolumeRecord(id: id, app: app, name: body.name, node: node, size: body.size, createdBy: actor)
        let ref = try Schema.volume(app, body.name)
        do {
            try await refs.compareAndSwap(ref, to: try await Records.put(record, in: keg), expecting: .absent, actor: actor)
        } catch let e as KbuildError where e.code == .conflict {
            // A volume of that name is being destroyed (for an app of this name destroyed before, perhaps).
            throw KbuildError(.conflict, "\(app) has a volume \(body.name) already (it may still be being destroyed: kbuild volumes \(app))")
        }
        // The node makes it (the scheduler puts it in its assignment): wait for its word.
        let deadline = Date().addingTimeInterval(45)
        while Date() < deadline {
            let info = try await volumeInfo(app, body.name)
            if info.state == "ready" { return info }
            if info.state == "failed" {
                // Nothing half-made stays: the node deletes what it made, then the record goes.
                try await markDestroying(app, body.name, actor: actor)
                throw KbuildError(.io, "failed to make volume \(body.name) on node \(node): \(info.error ?? "its node gave no reason"); nothing was kept")
            }
            try await reader.waitForChange(after: try await refs.currentRevision(), under: try Schema.node(node), timeout: .milliseconds(500))
        }
        return try await volumeInfo(app, body.name)
    }

    /// The node a new volume goes on: the one asked for, or the live, undrained
    /// node with the most room for volumes (what it reports free, less what
    /// volumes it has not made yet will take).
    func chooseVolumeNode(size: UInt64, asked: String?) async throws -> String {
        let drained = try await reader.drainedNodes()
        let all = try await reader.nodes()
        if let asked, !all.contains(where: { $0.record.name == asked }) {
            throw KbuildError(.notFound, "no node \(asked.debugQuoted) has registered (kbuild nodes lists them)")
        }
        var pending: [String: UInt64] = [:]
        for ref in try await refs.list(prefix: Schema.volumes) {
            guard case .volume = Schema.Key(ref.name), let v = try? await reader.record(VolumeRecord.self, ref.kid, what: "volume") else { continue }
            let reported = all.first { $0.record.name == v.node }?.status?.volumes?.contains { $0.id == v.id } ?? false
            if !reported && v.state == .active { pending[v.node, default: 0] += v.size }
        }
        let room = all.filter { n in
            (asked == nil || n.record.name == asked) && n.record.isAlive(reporting: n.status, at: Date()) && !drained.contains(n.record.name)
        }.compactMap { n -> (node: String, free: UInt64)? in
            guard let space = n.status?.volumeSpace else { return nil }
            let held = pending[n.record.name] ?? 0
            return (n.record.name, space > held ? space - held : 0)
        }
        guard let best = room.max(by: { ($0.free, $1.node) < ($1.free, $0.node) }) else {
            throw KbuildError(.unsatisfiable, asked.map { "node \($0) is not reporting, drained, or keeps no volumes; nothing was made" }
                ?? "no live node keeps volumes (kbuild nodes); nothing was made")
        }
        guard size <= best.free else {
            throw KbuildError(.unsatisfiable, "a volume of \(formatMemory(size)) does not fit: the most \(asked == nil ? "any node has" : "node \(best.node) has") for volumes is \(formatMemory(best.free)) (\(best.node)); nothing was made")
        }
        return best.node
    }

    func mountVolume(_ app: String, _ name: String, _ body: API.VolumeMountRequest, actor: String) async throws -> ReleaseEntry {
        let (_, volume) = try await volumeRecord(app, name)
        guard volume.state == .active else { throw KbuildError(.conflict, "volume \(name) is being destroyed") }
        let path = try VolumeRecord.check(mountPath: body.path)
        let types = body.types.flatMap { $0.isEmpty ? nil : Array(Set($0)).sorted() }
        for t in types ?? [] where !Release.isProcessType(t) {
            throw KbuildError(.invalidArgument, "release is \(app)'s release phase command: volumes are mounted into processes")
        }
        if let types, let current = try await releases.current(app)?.release {
            for t in types where current.processTypes[t] == nil {
                let known = current.processTypes.keys.filter(Release.isProcessType).sorted().joined(separator: ", ")
                throw KbuildError(.invalidArgument, "no process type \(t) in \(app) v\(current.version) (its types: \(known))")
            }
        }
        let mount = VolumeMount(volume: name, id: volume.id, node: volume.node, path: path, types: types)
        let check: @Sendable (Release) async throws -> Void = { next in
            // Destroyed meanwhile (volumes:destroy checks the release after it marks the volume, this after it reads the release).
            guard try await self.volumeRecord(app, name).record.state == .active else {
                throw KbuildError(.conflict, "volume \(name) is being destroyed")
            }
            try await self.checkFits(next)
        }
        return try await releases.changeMounts(app: app, actor: actor, check: check) { mounts in
            if let m = mounts.first(where: { $0.id == volume.id }) {
                throw KbuildError(.conflict, "volume \(name) is mounted at \(m.path) already (volumes:unmount first)")
            }
            if let m = mounts.first(where: { $0.path == path || $0.path.hasPrefix(path + "/") || path.hasPrefix($0.path + "/") }) {
                throw KbuildError(.conflict, "volume \(m.volume) is mounted at \(m.path): \(path) would overlap it")
            }
            mounts.append(mount)
            return "Mount \(name) at \(path)" + (types.map { " (\($0.joined(separator: ", ")))" } ?? "")
        }
    }

    func unmountVolume(_ app: String, _ name: String, actor: String) async throws -> ReleaseEntry {
        try VolumeRecord.check(name: name)
        return try await releases.changeMounts(app: app, actor: actor) { mounts in
            guard let i = mounts.firstIndex(where: { $0.volume == name }) else { throw KbuildError(.notFound, "volume \(name) is not mounted in \(app)") }
            let m = mounts.remove(at: i)
            return "Unmount \(name) from \(m.path)"
        }
    }

    /// A release's processes that mount volumes must fit on the volumes' node,
    /// with what other apps run there; each type in one node's room.
    func checkFits(_ release: Release) async throws {
        for type in release.runnableTypes {
            guard let spec = ProcessSpec.of(release, type: type, generation: 0), let mounts = spec.mounts else { continue }
            if let other = mounts.first(where: { $0.node != mounts[0].node }) {
                throw KbuildError(.unsatisfiable, "\(type) would mount \(mounts[0].volume) (on node \(mounts[0].node)) and \(other.volume) (on node \(other.node)): a process runs on one node; nothing changed")
            }
        }
        try await checkFits(app: release.app, formation: release.formation, release: release)
    }

    func destroyVolume(_ app: String, _ name: String, confirm: String?, actor: String) async throws -> [String: String] {
        let (_, volume) = try await volumeRecord(app, name)
        guard confirm == name else {
            throw KbuildError(.invalidArgument, "refusing to destroy volume \(name) without confirmation: pass confirm=\(name)")
        }
        try await refuseWhileMounted(app, volume)
        try await markDestroying(app, name, actor: actor)
        // A mount that raced this one: the volume stays.
        do {
            try await refuseWhileMounted(app, volume)
        } catch {
            _ = try await refs.update(try Schema.volume(app, name), as: VolumeRecord.self, in: keg, what: "volume", actor: actor) { old in
                guard var v = old, v.id == volume.id else { return old }
                v.state = .active
                return v
            }
            throw error
        }
        // Its node deletes it, then the scheduler drops the record: wait a little for that.
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            guard try await refs.get(try Schema.volume(app, name)) != nil else { return ["destroyed": name] }
            try await Task.sleep(for: .milliseconds(200))
        }
        return ["destroying": name, "node": volume.node]
    }

    /// Refuses while the current release mounts it, or the healthy one (a failed release would revert to it).
    func refuseWhileMounted(_ app: String, _ volume: VolumeRecord) async throws {
        var releases = [try await self.releases.current(app)?.release].compactMap { $0 }
        if let healthy = try await refs.get(try Schema.healthy(app)) { releases.append(try await reader.record(Release.self, healthy.kid, what: "release")) }
        for r in releases {
            if let m = r.mounts?.first(where: { $0.id == volume.id }) {
                throw KbuildError(.conflict, "volume \(volume.name) is mounted at \(m.path) in v\(r.version) (kbuild volumes:unmount \(app) \(volume.name) first, and let that release roll out); nothing was deleted")
            }
        }
    }

    func markDestroying(_ app: String, _ name: String, actor: String) async throws {
        _ = try await refs.update(try Schema.volume(app, name), as: VolumeRecord.self, in: keg, what: "volume", actor: actor) { old in
            guard var v = old else { return nil }
            v.state = .destroying
            return v
        }
    }
}
