import Hummingbird
import Foundation
import NIOPosix
import Builds
import GitGateway
import KbuildCore
import KbuildServer
import KbuildState
import OCI

/// The routes of the verbs that once read the control plane's data dir:
/// an app's settings, build cache and images (its token may), a build's log
/// and the tokens (the admin's only: the token check keeps app and node
/// tokens out of /builds and /tokens).
extension APIRoutes {
    func registerAdmin(on router: Router<Context>) {
        let p = API.prefix
        router.patch("\(p)/apps/:app") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                return try await self.apps.changeSettings(app, try await self.decode(API.AppSettings.self, r, c), actor: self.actor(r))
            }
        }
        router.post("\(p)/apps/:app/build-cache/purge") { r, c in
            try await self.answer { try await self.apps.purgeBuildCache(try await self.existing(c), actor: self.actor(r)) }
        }
        router.get("\(p)/apps/:app/images") { _, c in
            try await self.answer { try await ImageStore(keg: self.keg).history(app: try await self.existing(c), refs: self.refs) }
        }
        // SSH keys that may push (admin only: an app token never reaches /keys).
        router.get("\(p)/keys") { _, _ in
            try await self.answer { try await self.sshKeys { try $0.list().map(API.SSHKey.init) } }
        }
        router.post("\(p)/keys") { r, c in
            try await self.answer {
                let body = try await self.decode(API.AddKey.self, r, c)
                return try await self.sshKeys { API.SSHKey(try $0.add(publicKey: body.publicKey, name: body.name)) }
            }
        }
        router.delete("\(p)/keys/:name") { _, c in
            try await self.answer { () -> [String: String] in
                let name = c.parameters.get("name") ?? ""
                try await self.sshKeys { try $0.remove(name: name) }
                return ["removed": name]
            }
        }
        // Buildpacks (admin only): the list in detection order, and adding one by a tree sent to the Keg or a git URL.
        router.get("\(p)/buildpacks") { r, _ in
            try await self.answer { () -> [Buildpack] in
                let store = BuildpackStore(keg: self.keg, refs: self.refs)
                let all = try await store.list()
                return all.isEmpty ? try await store.registerShipped(actor: self.actor(r)) : all
            }
        }
        router.post("\(p)/buildpacks") { r, c in
            try await self.answer { () -> Buildpack in
                let body = try await self.decode(API.AddBuildpack.self, r, c)
                let store = BuildpackStore(keg: self.keg, refs: self.refs)
                switch (body.tree, body.gitURL) {
                case (let tree?, nil):
                    guard let name = body.name else { throw KbuildError(.invalidArgument, "a buildpack sent as a tree needs a name") }
                    return try await store.add(tree: tree, name: name, actor: self.actor(r))
                case (nil, let url?):
                    // Cloned by this server, on its network: an https URL only (no file://, ssh:// or git:// from afar).
                    guard url.hasPrefix("https://") else {
                        throw KbuildError(.invalidArgument, "a buildpack added through the API must be an https:// URL, not \(url.debugQuoted)")
                    }
                    return try await store.add(gitURL: url, name: body.name, actor: self.actor(r))
                default:
                    throw KbuildError(.invalidArgument, "give a buildpack as tree (sent to the Keg first) or gitURL, one of them")
                }
            }
        }
        router.get("\(p)/tokens") { _, _ in
            try await self.answer {
                try await AppTokens(keg: self.keg, refs: self.refs).list().map {
                    API.TokenInfo(name: $0.name, apps: $0.apps, node: $0.node, worker: $0.worker, createdBy: $0.createdBy, createdAt: $0.createdAt)
                }
            }
        }
        router.post("\(p)/tokens") { r, c in
            try await self.answer {
                let body = try await self.decode(API.CreateToken.self, r, c)
                let token = try await AppTokens(keg: self.keg, refs: self.refs).create(name: body.name, apps: body.apps, actor: self.actor(r))
                return API.CreatedToken(name: body.name, token: token)
            }
        }
        router.delete("\(p)/tokens/:name") { r, c in
            try await self.answer { () -> [String: String] in
                let name = c.parameters.get("name") ?? ""
                try await AppTokens(keg: self.keg, refs: self.refs).revoke(name: name, actor: self.actor(r))
                return ["revoked": name]
            }
        }
    }

    /// The SSH keys file of this control plane (small file I/O, off the cooperative threads).
    func sshKeys<T: Sendable>(_ work: @escaping @Sendable (SSHKeys) throws -> T) async throws -> T {
        let keys = SSHKeys(dataDir: keg.dataDir, kbuild: kbuild)
        // One change at a time: each reads, changes and rewrites the whole file.
        return try await NIOThreadPool.singleton.runIfActive { try sshKeysLock.withLock { try work(keys) } }
    }
}

extension API.SSHKey {
    init(_ key: SSHKeys.Key) { self.init(name: key.name, type: key.type, fingerprint: key.fingerprint) }
}

/// Serializes this server's changes to the SSH keys file.
private let sshKeysLock = NSLock()
