import KbuildCore
public import Keg
public import KbuildState
import Crypto
import Synchronization
public import Foundation

/// A token that may act on some apps only (`kbuild tokens:create NAME --app APP`),
/// stored as `tokens/NAME` → this record; the token itself is never stored,
/// only its SHA-256.
public struct AppTokenRecord: Codable, Sendable, Equatable {
    public var kind = "kbuild.token/v1"
    public var name: String
    public var sha256: String
    public var apps: [String]
    public var createdBy: String
    public var createdAt: Date

    public init(name: String, sha256: String, apps: [String], createdBy: String, createdAt: Date = Date()) {
        self.name = name
        self.sha256 = sha256
        self.apps = apps.sorted()
        self.createdBy = createdBy
        self.createdAt = createdAt
    }
}

/// The app tokens of a host: made, listed, revoked, and looked up by the
/// token check (a short cache, so a request costs no store read).
public final class AppTokens: Sendable {
    let keg: Keg
    let refs: any RefStore
    /// Token hash → apps, as read at a time (kept a second).
    private let cache = Mutex<(at: Date, byHash: [String: (name: String, apps: [String])])?>(nil)

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
        let token = AdminToken.generate(prefix: "kbt_")
        let record = AppTokenRecord(name: name, sha256: AppTokens.hash(token), apps: apps, createdBy: actor)
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

    /// The token's name and the apps it may act on, or nil when it is no app
    /// token. Revocations are seen within a second.
    func lookup(_ token: String) async -> (name: String, apps: [String])? {
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
        var byHash: [String: (name: String, apps: [String])] = [:]
        for r in all { byHash[r.sha256] = (r.name, r.apps) }
        cache.withLock { $0 = (now, byHash) }
        return byHash[hash]
    }
}
