public import KbuildCore
public import Foundation
import KbuildState

/// The forced command of kbuild's SSH keys (`kbuild git-shell`): sshd puts
/// what the client asked for in SSH_ORIGINAL_COMMAND; only git's
/// receive-pack and upload-pack of an app's repository are allowed.
public enum GitShell {
    public enum Service: String, Sendable { case receivePack = "receive-pack", uploadPack = "upload-pack" }

    /// `git-receive-pack 'APP.git'` (also `/APP.git`, `APP`, `git receive-pack …`)
    /// → (service, app). Anything else is refused with what was allowed.
    public static func parse(_ command: String?) throws -> (service: Service, app: String) {
        guard let command, !command.isEmpty else {
            throw KbuildError(.invalidArgument, "kbuild only takes git pushes and fetches here (git push kbuild main); there is no shell")
        }
        var rest = Substring(command)
        let service: Service
        if rest.hasPrefix("git-receive-pack ") || rest.hasPrefix("git receive-pack ") {
            service = .receivePack
        } else if rest.hasPrefix("git-upload-pack ") || rest.hasPrefix("git upload-pack ") {
            service = .uploadPack
        } else {
            throw KbuildError(.invalidArgument, "kbuild only takes git pushes and fetches here, not \(String(command.prefix(80)).debugQuoted)")
        }
        rest = rest.dropFirst(service == .receivePack ? "git-receive-pack ".count : "git-upload-pack ".count)
        var path = String(rest.trimmingCharacters(in: .whitespaces))
        if path.count >= 2, path.hasPrefix("'"), path.hasSuffix("'") { path = String(path.dropFirst().dropLast()) }
        guard !path.contains("'"), !path.contains(" ") else {
            throw KbuildError(.invalidArgument, "malformed repository path in \(String(command.prefix(80)).debugQuoted)")
        }
        while path.hasPrefix("/") { path.removeFirst() }
        if path.hasPrefix("~/") { path.removeFirst(2) }
        while path.hasSuffix("/") { path.removeLast() }
        if path.hasSuffix(".git") { path.removeLast(4) }
        try AppStore.checkName(path)
        return (service, path)
    }
}

/// The SSH keys that may push, as sshd reads them: `<data>/ssh/authorized_keys`,
/// each line forcing `kbuild git-shell` with the key's name.
public struct SSHKeys: Sendable {
    public struct Key: Sendable, Equatable, Codable {
        public var name: String
        public var type: String
        public var fingerprint: String
    }

    public let dataDir: DataDir
    /// The kbuild executable sshd runs.
    public let kbuild: String

    public init(dataDir: DataDir, kbuild: String) {
        self.dataDir = dataDir
        self.kbuild = kbuild
    }

    public var file: String { dataDir.root.path + "/ssh/authorized_keys" }

    static let types: Set<String> = [
        "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    ]

    /// Reads one OpenSSH public key line: `TYPE BASE64 [comment]`.
    public static func parsePublicKey(_ text: String) throws -> (type: String, blob: Data, comment: String) {
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        guard lines.count == 1 else {
            throw KbuildError(.invalidArgument, "failed to read the public key: want exactly one line `TYPE BASE64 [comment]` (as in ~/.ssh/id_ed25519.pub), found \(lines.count)")
        }
        let parts = lines[0].split(separator: " ", maxSplits: 2).map(String.init)
        guard parts.count >= 2 else { throw KbuildError(.invalidArgument, "failed to read the public key: want `TYPE BASE64 [comment]`") }
        guard types.contains(parts[0]) else {
            throw KbuildError(.invalidArgument, "failed to read the public key: \(parts[0].debugQuoted) is not a key type (want one of \(types.sorted().joined(separator: ", "))); is this a private key or an options line?")
        }
        guard let blob = Data(base64Encoded: parts[1]), blob.count > 4 else {
            throw KbuildError(.invalidArgument, "failed to read the public key: its body is not base64")
        }
        let len = Int(blob[0]) << 24 | Int(blob[1]) << 16 | Int(blob[2]) << 8 | Int(blob[3])
        guard blob.count >= 4 + len, String(decoding: blob[4..<(4 + len)], as: UTF8.self) == parts[0] else {
            throw KbuildError(.invalidArgument, "failed to read the public key: its body does not encode a \(parts[0]) key")
        }
        return (parts[0], blob, parts.count > 2 ? parts[2] : "")
    }

    static func fingerprint(_ blob: Data) -> String {
        "SHA256:" + Data(KID(hashing: Array(blob)).rawBytes).base64EncodedString().replacingOccurrences(of: "=", with: "")
    }

    public func list() throws -> [Key] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            // command="… --key NAME",no-…,no-user-rc TYPE BASE64 NAME
            guard let options = line.range(of: ",no-user-rc ") else { return nil }
            let rest = line[options.upperBound...].split(separator: " ", maxSplits: 2).map(String.init)
            guard rest.count == 3, SSHKeys.types.contains(rest[0]), let blob = Data(base64Encoded: rest[1]) else { return nil }
            return Key(name: rest[2], type: rest[0], fingerprint: SSHKeys.fingerprint(blob))
        }
    }

    /// Adds a key under `name` (a user name: 1 to 64 of letters, digits, . _ - @).
    @discardableResult
    public func add(publicKey text: String, name: String) throws -> Key {
        let (type, blob, _) = try SSHKeys.parsePublicKey(text)
        guard !name.isEmpty, name.utf8.count <= 64,
              name.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x30 && $0 <= 0x39) || ".-_@".utf8.contains($0) })
        else { throw KbuildError(.invalidArgument, "invalid key name \(name.debugQuoted): use 1 to 64 of letters, digits, '.', '_', '-', '@'") }
        let key = Key(name: name, type: type, fingerprint: SSHKeys.fingerprint(blob))
        let existing = try list()
        if let same = existing.first(where: { $0.fingerprint == key.fingerprint }) {
            throw KbuildError(.conflict, "failed to add the key: it is already there, as \(same.name)")
        }
        if existing.contains(where: { $0.name == name }) {
            throw KbuildError(.conflict, "failed to add the key: a key named \(name) exists (remove it with `kbuild keys:remove \(name)`)")
        }
        let command = "\(kbuild) git-shell --key \(name) --data-dir \(dataDir.root.path)"
        guard !command.contains("\"") && !command.contains("\\") && !command.contains(where: \.isNewline) else {
            throw KbuildError(.invalidArgument, "failed to add the key: the path \(command.debugQuoted) cannot be quoted for authorized_keys")
        }
        let line = "command=\"\(command)\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty,no-user-rc \(type) \(blob.base64EncodedString()) \(name)\n"
        try rewrite { $0 + line }
        return key
    }

    public func remove(name: String) throws {
        guard try list().contains(where: { $0.name == name }) else { throw KbuildError(.notFound, "no key named \(name.debugQuoted): see `kbuild keys`") }
        try rewrite { text in
            text.split(separator: "\n").filter { !$0.hasSuffix(" \(name)") }.map { $0 + "\n" }.joined()
        }
    }

    /// Writes the file anew beside it and renames it into place (sshd never sees half a file).
    private func rewrite(_ change: (String) -> String) throws {
        let dir = (file as NSString).deletingLastPathComponent
        if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw KbuildError.syscall("mkdir", dir, verb: "write SSH keys") }
        let old = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        let tmp = file + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KbuildError.syscall("open", tmp, verb: "write SSH keys") }
        let bytes = Array(change(old).utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == bytes.count, synced == 0, rename(tmp, file) == 0 else {
            unlink(tmp)
            throw KbuildError.syscall("write", file, verb: "write SSH keys")
        }
    }
}
