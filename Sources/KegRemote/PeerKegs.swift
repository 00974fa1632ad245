public import KbuildCore
public import Keg

/// The Kegs of the other control planes sharing one state (etcd): what this
/// one lacks it fetches from whichever holds it, and what it makes (a push's
/// source, a build's layers, image and log) it sends to every one that is up
/// before anything that names it is acknowledged, so the loss of any one
/// machine loses no push. With no other control plane up, there is nowhere
/// to send to, and `publish` says so by returning 0.
public struct PeerKegs: KegUpstream {
    /// The other control planes that are up now, each reached with its own CA.
    let peers: @Sendable () async throws -> [KegRemote]

    public init(peers: @escaping @Sendable () async throws -> [KegRemote]) {
        self.peers = peers
    }

    public func fetch(_ kid: KID, into keg: Keg) async throws {
        if keg.contains(kid) { return }
        var failures: [String] = []
        for peer in try await peers() {
            do {
                _ = try await peer.pull(kid, into: keg)
                return
            } catch {
                failures.append("\(error)")
            }
        }
        throw KbuildError(.notFound, "no control plane holds \(kid)" + (failures.isEmpty ? " (no other control plane is up)" : ": " + failures.joined(separator: "; ")))
    }

    public func publish(_ roots: [KID], from keg: Keg) async throws {
        _ = try await send(roots, from: keg)
    }

    /// Sends `roots` (and everything under them) to every other control plane that is up, at once;
    /// returns how many took them all. Throws when there were some and none did.
    @discardableResult
    public func send(_ roots: [KID], from keg: Keg) async throws -> Int {
        let all = try await peers()
        guard !all.isEmpty, !roots.isEmpty else { return 0 }
        let results = await withTaskGroup(of: String?.self) { group in
            for peer in all {
                group.addTask {
                    do {
                        try await peer.publish(roots, from: keg)
                        return nil
                    } catch {
                        return "\(peer.baseURL.absoluteString): \(error)"
                    }
                }
            }
            var out: [String?] = []
            for await r in group { out.append(r) }
            return out
        }
        let took = results.filter { $0 == nil }.count
        if took == 0 {
            throw KbuildError(.io, "no other control plane took \(roots.count) object\(roots.count == 1 ? "" : "s"): \(results.compactMap { $0 }.joined(separator: "; "))")
        }
        return took
    }
}
