import Crypto
import Foundation
import KbuildCore
import Synchronization

/// A browser's login: the token it logged in with, sealed (ChaCha20-Poly1305,
/// a key only this kbuild has) into its cookie, so the server keeps no session
/// table and a cookie cannot be read, forged or stretched past its expiry.
/// Logging out revokes the session's id here until it would have expired.
struct Session: Codable, Sendable, Equatable {
    /// Random: what the CSRF token is derived from and logout revokes.
    var id: String
    var token: String
    /// Seconds since 1970.
    var expires: Double
    /// "admin", or the apps an app token reaches, for the page header.
    var who: String
}

final class SessionKeys: Sendable {
    static let cookie = "kbuild_session"
    /// How long a login lasts.
    static let lifetime: TimeInterval = 12 * 3600
    /// How long a one-time login URL works.
    static let codeLifetime: TimeInterval = 300

    /// The key's bytes (a `SymmetricKey` is made from them for each use: it is not `Sendable`).
    private let keyBytes: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: keyBytes) }
    private let revoked = Mutex<[String: Double]>([:])
    private let codes = Mutex<[String: (token: String, expires: Double)]>([:])

    /// Where logged-out session ids are kept until they would have expired (nil: in memory only), so a
    /// restart does not bring a logged-out cookie back.
    private let revokedFile: String?

    init(key: SymmetricKey, revokedFile: String? = nil) {
        keyBytes = key.withUnsafeBytes { Array($0) }
        self.revokedFile = revokedFile
        guard let revokedFile, let text = try? String(contentsOfFile: revokedFile, encoding: .utf8) else { return }
        let now = Date().timeIntervalSince1970
        var list: [String: Double] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let expires = Double(parts[1]), expires > now { list[String(parts[0])] = expires }
        }
        revoked.withLock { $0 = list }
    }

    /// The key in `path` (32 random bytes, root only), made on first use.
    static func loadOrCreate(path: String) throws -> SessionKeys {
        if let data = FileManager.default.contents(atPath: path), data.count == 32 {
            return SessionKeys(key: SymmetricKey(data: data), revokedFile: path + ".revoked")
        }
        let key = SymmetricKey(size: .bits256)
        let data = key.withUnsafeBytes { Data($0) }
        let temp = path + ".tmp"
        guard FileManager.default.createFile(atPath: temp, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw KbuildError(.io, "failed to write the dashboard's session key \(temp)")
        }
        guard rename(temp, path) == 0 else { throw KbuildError.syscall("rename", path, verb: "keep the dashboard's session key") }
        return SessionKeys(key: key, revokedFile: path + ".revoked")
    }

    func seal(_ session: Session) throws -> String {
        let box = try ChaChaPoly.seal(try JSONEncoder().encode(session), using: key)
        return Self.base64url(box.combined)
    }

    /// The session a cookie holds, if this kbuild sealed it, it has not expired and was not logged out.
    func open(_ cookie: String, now: Date = Date()) -> Session? {
        guard let data = Self.unbase64url(cookie), let box = try? ChaChaPoly.SealedBox(combined: data),
              let plain = try? ChaChaPoly.open(box, using: key),
              let session = try? JSONDecoder().decode(Session.self, from: plain),
              session.expires > now.timeIntervalSince1970 else { return nil }
        return revoked.withLock { $0[session.id] == nil } ? session : nil
    }

    /// Logs a session out: its cookie opens no more, here and after a restart.
    func revoke(_ session: Session) throws {
        // Written under the lock: two logouts at once cannot put an older list on disk last.
        let kept = revoked.withLock { list -> Bool in
            let now = Date().timeIntervalSince1970
            list = list.filter { $0.value > now }
            list[session.id] = session.expires
            guard let revokedFile else { return true }
            let temp = revokedFile + ".tmp"
            let text = list.map { "\($0.key) \($0.value)\n" }.sorted().joined()
            return FileManager.default.createFile(atPath: temp, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
                && rename(temp, revokedFile) == 0
        }
        guard kept else {
            throw KbuildError(.io, "failed to keep the logout in \(revokedFile ?? ""): the session ends now, but would come back after a restart")
        }
    }

    /// The CSRF token of a session: every form and state-changing request carries it.
    func csrf(_ session: Session) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("csrf:\(session.id)".utf8), using: key)
        return Self.base64url(Data(mac))
    }

    func checkCSRF(_ given: String?, _ session: Session) -> Bool {
        guard let given else { return false }
        let want = Array(csrf(session).utf8), got = Array(given.utf8)
        guard want.count == got.count else { return false }
        return zip(want, got).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// A one-time login code for `token` (`kbuild dashboard`), good for five minutes.
    func makeCode(for token: String) -> (code: String, expires: Date) {
        let code = Self.base64url(Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }))
        let expires = Date().addingTimeInterval(Self.codeLifetime)
        codes.withLock { list in
            let now = Date().timeIntervalSince1970
            list = list.filter { $0.value.expires > now }
            list[code] = (token, expires.timeIntervalSince1970)
        }
        return (code, expires)
    }

    /// The token a code stands for, without spending it (the page that asks to continue says whose it is).
    func peek(_ code: String) -> String? {
        codes.withLock { list in
            guard let entry = list[code], entry.expires > Date().timeIntervalSince1970 else { return nil }
            return entry.token
        }
    }

    /// The token a code stands for, once: using it spends it.
    func spend(_ code: String) -> String? {
        codes.withLock { list in
            guard let entry = list.removeValue(forKey: code), entry.expires > Date().timeIntervalSince1970 else { return nil }
            return entry.token
        }
    }

    static func newID() -> String { base64url(Data(SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) })) }

    static func base64url(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func unbase64url(_ text: String) -> Data? {
        guard text.utf8.count <= 8192 else { return nil }
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.utf8.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s)
    }
}
