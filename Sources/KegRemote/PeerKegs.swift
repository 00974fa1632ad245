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
    /// returns how many took them all. One that refuses the connection is not up (a control plane that
    /// died stays registered until its lease runs out). Throws when some were up and none took them.
    @discardableResult
    public func send(_ roots: [KID], from keg: Keg) async throws -> Int {
        let all = try await peers()
        guard !all.isEmpty, !roots.isEmpty else { return 0 }
        enum Result: Sendable { case took, away, failed(String) }
        let results = await withTaskGroup(of: Result.self) { group in
            for peer in all {
                group.addTask {
                    do {
                        try await peer.publish(roots, from: keg)
                        return .took
                    } catch {
                        let text = "\(error)"
                        if text.contains("Connection refused") || text.contains("connectTimeout") || text.contains("No route to host") { return .away }
                        return .failed("\(peer.baseURL.absoluteString): \(text)")
                    }
                }
            }
            var out: [Result] = []
            for await r in group { out.append(r) }
            return out
        }
        let took = results.filter { if case .took = $0 { return true } else { return false } }.count
        let failures = results.compactMap { if case .failed(let why) = $0 { return why } else { return nil } }
        if took == 0 && !failures.isEmpty {
            throw KbuildError(.io, "no other control plane took \(roots.count) object\(roots.count == 1 ? "" : "s"): \(failures.joined(separator: "; "))")
        }
        return took
    }
}
