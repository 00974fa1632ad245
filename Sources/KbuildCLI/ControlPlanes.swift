import EtcdState
import Foundation
import GitGateway
import KbuildClient
import KbuildCore
import KegRemote
import ServiceLifecycle
import Synchronization

/// What a `kbuild up` whose state is on etcd shares with the other control
/// planes of that etcd: its registration (`EtcdMembers`), the admin token,
/// their Kegs (`PeerKegs`: a push's objects go to them before it is
/// acknowledged, and what this one lacks comes from them) and their git
/// repositories (`GitMirror`). Each peer is reached over HTTPS and trusted
/// by the CA its own registration names.
final class ControlPlanes: Sendable {
    let members: EtcdMembers
    /// This control plane's name among them (advertised address and API port).
    let name: String
    let token: String
    let dataDir: DataDir
    /// This control plane's HTTPS URL, once its listener is bound.
    private let url = Mutex<String?>(nil)

    init(etcd: EtcdClient, name: String, token: String, dataDir: DataDir) {
        members = EtcdMembers(etcd: etcd)
        self.name = name
        self.token = token
        self.dataDir = dataDir
    }

    /// Joins the control planes of `etcd` as `name`, taking their admin token (or giving this data
    /// dir's, when first).
    static func join(etcd: EtcdClient, name: String, dataDir: DataDir) async throws -> ControlPlanes {
        let local = try AdminToken.loadOrCreate(in: dataDir)
        let shared = try await EtcdMembers(etcd: etcd).sharedAdminToken(local: local)
        if shared != local { try AdminToken.replace(in: dataDir, with: shared) }
        return ControlPlanes(etcd: etcd, name: name, token: shared, dataDir: dataDir)
    }

    /// Called with the HTTPS listener's reachable URL.
    func bound(_ url: String) { self.url.withLock { $0 = url } }

    /// The others that are up (a record whose name or URL is not one is skipped).
    func others() async throws -> [EtcdMembers.Member] {
        try await members.list().filter { m in
            m.name != name && m.name.allSatisfy { $0.isLetter || $0.isNumber || ".:-_[]".contains($0) }
                && URL(string: m.url).map { $0.scheme == "https" && $0.host != nil } == true
        }
    }

    var kegs: PeerKegs {
        PeerKegs { [self] in
            try await others().compactMap { m in
                guard let url = URL(string: m.url) else { return nil }
                return KegRemote(baseURL: url, token: token, client: try ClientTLS.client(trusting: m.ca))
            }
        }
    }

    var gitPeers: @Sendable () async throws -> [GitMirror.Peer] {
        { [self] in
            try await others().map { m in
                let file = dataDir.tls.appendingPathComponent("peer-\(m.name.replacingOccurrences(of: ":", with: "_")).crt").path
                if (try? String(contentsOfFile: file, encoding: .utf8)) != m.ca { try Data(m.ca.utf8).write(to: URL(fileURLWithPath: file), options: .atomic) }
                return GitMirror.Peer(url: m.url, token: token, caFile: file)
            }
        }
    }

    /// Keeps this control plane registered (once its HTTPS URL is known) until shutdown.
    struct Registration: Service {
        let planes: ControlPlanes
        let say: @Sendable (String) -> Void
        func run() async throws {
            try await cancelWhenGracefulShutdown { [planes, say] in
                try await planes.members.keep({
                    while true {
                        if let url = planes.url.withLock({ $0 }) {
                            let ca = try String(contentsOf: planes.dataDir.tls.appendingPathComponent("ca.crt"), encoding: .utf8)
                            return EtcdMembers.Member(name: planes.name, url: url, ca: ca)
                        }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }, say: say)
            }
        }
    }

    /// Prunes old node reports from etcd, on whichever control plane is elected to, until shutdown.
    struct Pruning: Service {
        let etcd: EtcdClient
        let holder: String
        let say: @Sendable (String) -> Void
        func run() async throws {
            let store = EtcdRefStore(etcd: etcd)
            try await cancelWhenGracefulShutdown { [store, holder, say] in
                try await EtcdElection(store: store, holder: holder, say: { _ in }).lead("pruner") { _ in
                    try await EtcdPruner(store: store).run(say: say)
                }
            }
        }
    }

    /// Follows the apps' pushes into this control plane's repositories until shutdown.
    struct Mirror: Service {
        let mirror: GitMirror
        func run() async throws {
            try await cancelWhenGracefulShutdown { [mirror] in try await mirror.run() }
        }
    }
}
