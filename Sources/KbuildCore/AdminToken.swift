import Foundation
import Crypto

/// The admin token: created on first start of `kbuild up`, stored 0600 in the
/// data dir, where the CLI on the same machine finds it.
public enum AdminToken {
    /// Reads the token, creating it (atomically, 0600) when there is none.
    public static func loadOrCreate(in dataDir: DataDir) throws -> String {
        if let token = try load(from: dataDir) { return token }
        let token = generate(prefix: "kb_")
        let tmp = dataDir.adminToken.path + ".tmp.\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KbuildError.syscall("open", tmp, verb: "create admin token") }
        let line = Array((token + "\n").utf8)
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == line.count, synced == 0 else {
            unlink(tmp)
            throw KbuildError.syscall("write", tmp, verb: "create admin token")
        }
        // link(2) fails if another process created the token first: keep theirs.
        if link(tmp, dataDir.adminToken.path) != 0 {
            let err = errno
            unlink(tmp)
            if err == EEXIST, let existing = try load(from: dataDir) { return existing }
            throw KbuildError.syscall("link", dataDir.adminToken.path, errno: err, verb: "create admin token")
        }
        unlink(tmp)
        return token
    }

    /// Replaces the token in the data dir (0600, atomically): a control plane that shares its state
    /// with others takes their admin token.
    public static func replace(in dataDir: DataDir, with token: String) throws {
        let tmp = dataDir.adminToken.path + ".tmp.\(getpid())"
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KbuildError.syscall("open", tmp, verb: "replace the admin token") }
        let line = Array((token + "\n").utf8)
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == line.count, synced == 0, rename(tmp, dataDir.adminToken.path) == 0 else {
            unlink(tmp)
            throw KbuildError.syscall("write", dataDir.adminToken.path, verb: "replace the admin token")
        }
    }

    /// A new token: the prefix and 256 random bits in hex.
    public static func generate(prefix: String) -> String {
        var rng = SystemRandomNumberGenerator()
        return prefix + (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
    }

    /// The token in the data dir, or nil if `kbuild up` has not created one yet.
    public static func load(from dataDir: DataDir) throws -> String? {
        guard let data = FileManager.default.contents(atPath: dataDir.adminToken.path) else { return nil }
        let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw KbuildError(.corrupt, "failed to read admin token \(dataDir.adminToken.path): file is empty") }
        return token
    }

    /// Compares two tokens in time that does not depend on where they differ.
    public static func matches(_ given: String, _ expected: String) -> Bool {
        let a = Array(SHA256.hash(data: Array(given.utf8)))
        let b = Array(SHA256.hash(data: Array(expected.utf8)))
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}
