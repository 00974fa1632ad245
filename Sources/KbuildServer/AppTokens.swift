import KbuildCore
public import Keg
public import KbuildState
import Crypto
import Synchronization
public import Foundation

/// A token that may act on some apps only (`kbuild tokens:create NAME --app APP`),
/// or as one node only (`kbuild nodes:join-token NODE`: `node` set, no apps),
/// or as one build worker (`kbuild workers:join-token NAME`: `worker` set),
/// stored as `tokens/NAME` → this record; the token itself is never stored,
/// only its SHA-256.
public struct AppTokenRecord: Codable, Sendable, Equatable {
    public var kind = "kbuild.token/v1"
    public var name: String
    public var sha256: String
    public var apps: [String]
    /// The node a join token acts as (`NodeScope` says what it may reach).
    public var node: String?
    /// The only address that node may register (where the router will send its apps' requests), when given.
    public var address: String?
    /// The build worker a worker join token acts as (`WorkerScope` says what it may reach).
    public var worker: String?
    public var createdBy: String
    public var createdAt: Date

    public init(name: String, sha256: String, apps: [String], node: String? = nil, address: String? = nil, worker: String? = nil,
                createdBy: String, createdAt: Date = Date()) {
        self.name = name
        self.sha256 = sha256
        self.apps = apps.sorted()
        self.node = node
        self.address = address
        self.worker = worker
        self.createdBy = createdBy
        self.createdAt = createdAt
    }
}

/// Who a token that is not the admin's acts as.
public struct TokenScope: Sendable, Equatable {
    public var name: String
    public var apps: [String]
    public var node: String?
    public var address: String?
    public var worker: String?
}

/// The app tokens of a host: made, listed, revoked, and looked up by the
/// token check (a short cache, so a request costs no store read).
public final class AppTokens: Sendable {
    let keg: Keg
    let refs: any RefStore
    /// Token hash → apps, as read at a time (kept a second).
    private let cache = Mutex<(at: Date, byHash: [String: TokenScope])?>(nil)

    public init(keg: Keg, refs: any RefStore) {
        self.keg = keg
        self.refs = refs
    }

    public static func hash(_ token: String) -> String {
        SHA256.hash(data: Array(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Makes a token for `apps`; returns it (shown once; only its hash is kept).
    public func create(name: String, apps: [String], actor: String) async throws -> String {
        guard Names.isAppName(name) else { throw KbuildError(.invalidArgument, "invalid token name \(name.debugQuoted): a-z, 0-9 and '-', starting with a letter") }
        guard !apps.isEmpty else { throw KbuildError(.invalidArgument, "a token needs at least one app (--app APP)") }
        for app in apps where try await refs.get(try Schema.app(app)) == nil {
            throw KbuildError(.notFound, "no app named \(app)")
        }
        return try await store(AppTokenRecord(name: name, sha256: "", apps: apps, createdBy: actor), prefix: "kbt_", actor: actor)
    }

    /// Makes the join token of node `node` (`kbuild agent --join URL --token …`),
    /// named `node-NODE`: it may register that node and act as it, nothing else;
    /// with `address`, it may register only that address (the router sends the
    /// node's apps' requests there, so a node cannot point them elsewhere).
    public func createJoin(node: String, address: String? = nil, actor: String) async throws -> String {
        guard Names.isAppName(node) else { throw KbuildError(.invalidArgument, "invalid node name \(node.debugQuoted): a-z, 0-9 and '-', starting with a letter") }
        if let address {
            var v4 = in_addr()
            guard inet_pton(AF_INET, address, &v4) == 1 else { throw KbuildError(.invalidArgument, "invalid node address \(address.debugQuoted): an IPv4 address") }
        }
        return try await store(AppTokenRecord(name: "node-\(node)", sha256: "", apps: [], node: node, address: address, createdBy: actor),
                               prefix: "kbn_", actor: actor)
    }

    /// Makes the join token of build worker `worker` (`kbuild worker --join URL --token …`),
    /// named `worker-NAME`: it may claim and run builds as that worker, nothing else.
    public func createWorkerJoin(worker: String, actor: String) async throws -> String {
        guard Names.isAppName(worker) else { throw KbuildError(.invalidArgument, "invalid worker name \(worker.debugQuoted): a-z, 0-9 and '-', starting with a letter") }
        return try await store(AppTokenRecord(name: "worker-\(worker)", sha256: "", apps: [], worker: worker, createdBy: actor), prefix: "kbw_", actor: actor)
    }

    private func store(_ template: AppTokenRecord, prefix: String, actor: String) async throws -> String {
        let name = template.name
        let token = AdminToken.generate(prefix: prefix)
        var record = template
        record.sha256 = AppTokens.hash(token)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        encoder.dateEncodingStrategy = .iso8601
        let kid = try keg.putBlob(Array(try encoder.encode(record)))
        do {
            try await refs.compareAndSwap(try Schema.token(name), to: kid, expecting: .absent, actor: actor)
        } catch let e as KbuildError where e.code == .conflict {
            throw KbuildError(.conflict, "a token named \(name) exists (revoke it first)")
        }
        cache.withLock { $0 = nil }
        return token
    }

    public func list() async throws -> [AppTokenRecord] {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try await refs.list(prefix: Schema.tokens).map { ref in
            try decoder.decode(AppTokenRecord.self, from: Data(try keg.logicalBytes(ref.kid, maxWhole: 1 << 20)))
        }
    }

    public func revoke(name: String, actor: String) async throws {
        let ref = try Schema.token(name)
        guard let current = try await refs.get(ref) else { throw KbuildError(.notFound, "no token named \(name)") }
        try await refs.compareAndSwap(ref, to: nil, expecting: .value(current.kid), actor: actor)
        cache.withLock { $0 = nil }
    }

    /// Takes `app` out of every token (a token left with no app is revoked):
    /// `apps:destroy` does this, so a token never reaches a new app that
    /// happens to get the old one's name.
    public func forget(app: String, actor: String) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        encoder.dateEncodingStrategy = .iso8601
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        for ref in try await refs.list(prefix: Schema.tokens) {
            guard var record = try? decoder.decode(AppTokenRecord.self, from: Data(try keg.logicalBytes(ref.kid, maxWhole: 1 << 20))),
                  record.apps.contains(app) else { continue }
            record.apps.removeAll { $0 == app }
            let next = record.apps.isEmpty ? nil : try keg.putBlob(Array(try encoder.encode(record)))
            try await refs.compareAndSwap(ref.name, to: next, expecting: .value(ref.kid), actor: actor)
        }
        cache.withLock { $0 = nil }
    }

    /// Who the token acts as, or nil when it is no app or node token.
    /// Revocations are seen within a second.
    func lookup(_ token: String) async -> TokenScope? {
        let hash = AppTokens.hash(token)
        let now = Date()
        // A hit is good for a second (revocations are seen within one); a miss
        // reads the store again once the cache is 100 ms old, so a token made a
        // moment ago works at once while wrong tokens cost at most ten reads a second.
        if let (age, hit) = cache.withLock({ c in c.map { (now.timeIntervalSince($0.at), $0.byHash) } }), age < 1,
           hit[hash] != nil || age < 0.1 {
            return hit[hash]
        }
        let all = (try? await list()) ?? []
        var byHash: [String: TokenScope] = [:]
        for r in all { byHash[r.sha256] = TokenScope(name: r.name, apps: r.apps, node: r.node, address: r.address, worker: r.worker) }
        cache.withLock { $0 = (now, byHash) }
        return byHash[hash]
    }
}
