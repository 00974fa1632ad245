import ArgumentParser
import Foundation
import KbuildCore
import KbuildClient

/// Joining a control plane from another machine (`kbuild agent --join`,
/// `kbuild worker --join`): the URL, token and CA pin are checked before
/// anything starts, and the first connection trusts only the CA whose hash
/// the join command names (as `kubeadm join --discovery-token-ca-cert-hash` does).
enum ControlPlaneJoin {
    static func validate(join: String, token: String?, caHash: String?, hint: String) throws {
        guard let url = URL(string: join), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
            throw ValidationError("invalid --join \(join.debugDescription): the control plane's URL, as https://HOST:PORT")
        }
        guard token != nil else { throw ValidationError("--join needs --token (or $KBUILD_JOIN_TOKEN): \(hint) on the control plane prints both") }
        if url.scheme == "https" {
            guard let caHash else { throw ValidationError("an https --join needs --ca-hash sha256:… (\(hint) prints it), so the first connection is pinned") }
            guard ClientTLS.isHash(caHash) else { throw ValidationError("invalid --ca-hash \(caHash.debugDescription): sha256: and 64 lowercase hex digits") }
        } else if caHash != nil {
            throw ValidationError("--ca-hash pins an https --join URL; \(join) is plain http")
        } else if !["127.0.0.1", "localhost", "::1"].contains(url.host ?? "") {
            say("warning: joining \(join) over plain http: the join token crosses the network in the clear (use the control plane's https URL and --ca-hash)")
        }
    }

    /// A client of the control plane at `join`: over https, its CA is fetched
    /// once, checked against the pinned hash and kept in the data dir; the
    /// store is read once, so a wrong URL or token fails here, naming them.
    static func connect(join: String, token: String, caHash: String?, dataDir: DataDir, what: String, actor: String) async throws -> KbuildClient {
        let base = join.hasSuffix("/") ? String(join.dropLast()) : join
        do {
            var ca: String?
            if let caHash {
                let saved = dataDir.root.path + "/control-plane-ca.crt"
                if let kept = try? String(contentsOfFile: saved, encoding: .utf8), (try? ClientTLS.hash(pem: kept)) == caHash {
                    ca = kept
                } else {
                    ca = try await ClientTLS.fetchCA(from: base, pin: caHash)
                    try Data(ca!.utf8).write(to: URL(fileURLWithPath: saved), options: .atomic)
                }
            }
            let client = try KbuildClient(base: base, token: token, actor: actor, trusting: ca)
            _ = try await RemoteRefStore(client: client).currentRevision()
            return client
        } catch {
            throw KbuildError(.io, "failed to join \(join) as \(what): \((error as? KbuildError)?.message ?? "\(error)")")
        }
    }
}
