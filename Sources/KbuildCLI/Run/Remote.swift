import ArgumentParser
import Foundation
import KbuildClient
import KbuildCore

/// What `kbuild login` saves: the API's URL and a token.
struct Credentials: Codable {
    var url: String
    var token: String

    static var file: String {
        let env = ProcessInfo.processInfo.environment
        let config = env["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ((env["HOME"] ?? NSHomeDirectory()) + "/.config")
        return config + "/kbuild/credentials.json"
    }
}

extension GlobalOptions {
    /// The API this command talks to: $KBUILD_URL and $KBUILD_TOKEN, else
    /// what `kbuild login` saved (unless a data dir is named), else the
    /// `kbuild up` of this machine's data dir.
    func client() throws -> KbuildClient {
        if let configured = try configuredClient() { return configured }
        let dir = self.dir
        guard let url = localServerURL(), !url.isEmpty else {
            throw KbuildError(.notFound, "failed to find kbuild's API: no `kbuild up` is running on \(dir.root.path) (start one, set KBUILD_URL and KBUILD_TOKEN, or kbuild login URL)")
        }
        return try KbuildClient(base: url, token: try AdminToken.loadOrCreate(in: dir), actor: currentActor)
    }

    /// The API of another machine, when the CLI is pointed at one (by
    /// $KBUILD_URL or `kbuild login`) and it is not this machine's own
    /// `kbuild up`: verbs that read a data dir must then go through it, or refuse.
    func remoteClient() throws -> KbuildClient? {
        // A data dir named on purpose is this machine's, whatever KBUILD_URL says.
        if dataDir != nil || !(ProcessInfo.processInfo.environment["KBUILD_DATA_DIR"] ?? "").isEmpty { return nil }
        guard let configured = try configuredClient() else { return nil }
        return Self.isThisMachine(configured.base, localServer: localServerURL()) ? nil : configured
    }

    /// Refuses a verb that reads the control plane's data dir when the CLI is
    /// pointed at another machine: it would answer from this machine's
    /// (empty or different) data dir, which is wrong.
    func refuseRemote(_ verb: String) throws {
        guard let remote = try remoteClient() else { return }
        throw KbuildError(.invalidArgument, """
            kbuild \(verb) works only on the control plane's machine (it reads its data dir), and this CLI is pointed at \
            \(remote.base) (by KBUILD_URL or kbuild login): run it there, or name this machine's data dir with --data-dir
            """)
    }

    /// The client $KBUILD_URL and $KBUILD_TOKEN or the login file name, if any.
    private func configuredClient() throws -> KbuildClient? {
        let env = ProcessInfo.processInfo.environment
        // KBUILD_TOKEN alone is `keg pull`'s token for its --from, not an API to talk to.
        let url = env["KBUILD_URL"] ?? "", token = env["KBUILD_TOKEN"] ?? ""
        if !url.isEmpty {
            guard !token.isEmpty else { throw KbuildError(.invalidArgument, "KBUILD_URL is set but KBUILD_TOKEN is not: set both (or neither)") }
            return try KbuildClient(base: try Self.checkURL(url, from: "KBUILD_URL"), token: token, actor: currentActor, trusting: try Self.trustedCA())
        }
        // An explicit data dir means that machine's kbuild, whatever login says.
        guard dataDir == nil && env["KBUILD_DATA_DIR"] == nil, let data = FileManager.default.contents(atPath: Credentials.file) else { return nil }
        guard let saved = try? JSONDecoder().decode(Credentials.self, from: data) else {
            throw KbuildError(.corrupt, "failed to read \(Credentials.file): not what kbuild login writes (log in again)")
        }
        return try KbuildClient(base: try Self.checkURL(saved.url, from: Credentials.file), token: saved.token, actor: currentActor,
                                trusting: try Self.trustedCA())
    }

    /// The CA an https kbuild's certificate must chain to: $KBUILD_CA_FILE (the control plane's DATA/tls/ca.crt), if set.
    static func trustedCA() throws -> String? {
        guard let path = ProcessInfo.processInfo.environment["KBUILD_CA_FILE"], !path.isEmpty else { return nil }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw KbuildError(.notFound, "failed to read KBUILD_CA_FILE \(path): copy the control plane's DATA/tls/ca.crt here, or unset it")
        }
        return text
    }

    private func localServerURL() -> String? {
        (try? String(contentsOf: dir.serverURLFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether `base` is this machine's own `kbuild up` (`localServer`): the
    /// same port, on a loopback name or one of this machine's addresses.
    static func isThisMachine(_ base: String, localServer: String?) -> Bool {
        guard let localServer, let theirs = URL(string: base), let ours = URL(string: localServer),
              let port = theirs.port, port == ours.port, let host = theirs.host?.lowercased() else { return false }
        if host == ours.host?.lowercased() || ["localhost", "127.0.0.1", "::1", "[::1]"].contains(host) || host.hasPrefix("127.") { return true }
        return localAddresses().contains(host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")))
    }

    /// This machine's interface addresses, numeric.
    static func localAddresses() -> Set<String> {
        var out: Set<String> = []
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return out }
        defer { freeifaddrs(list) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let addr = entry.pointee.ifa_addr else { continue }
            let family = Int32(addr.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6 else { continue }
            var name = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let length = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
            if getnameinfo(addr, length, &name, socklen_t(name.count), nil, 0, NI_NUMERICHOST) == 0 {
                let text = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                out.insert(text.split(separator: "%").first.map(String.init) ?? text)
            }
        }
        return out
    }

    /// An API URL: http or https, a host, no path beyond `/`.
    static func checkURL(_ text: String, from source: String) throws -> String {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = url.host, !host.isEmpty, url.path.isEmpty || url.path == "/", url.query == nil else {
            throw KbuildError(.invalidArgument, "invalid API URL \(text.debugQuoted) (from \(source)): want http://HOST:PORT")
        }
        return text.hasSuffix("/") ? String(text.dropLast()) : text
    }
}

/// A verb that reads the control plane's data dir and has no API yet: with
/// the CLI pointed at another machine it refuses (`refuseRemote`) instead of
/// answering from this machine's data dir. The list is every such command.
protocol ControlPlaneOnly: ParsableCommand {
    var global: GlobalOptions { get }
    /// The verb as users type it (`ref ls`, not `ls`).
    static var verb: String { get }
}

extension ControlPlaneOnly {
    static var verb: String { configuration.commandName ?? "" }
}

extension ImageExport: ControlPlaneOnly { static var verb: String { "image export" } }
extension SourceImportCommand: ControlPlaneOnly { static var verb: String { "source import" } }
extension StackCreate: ControlPlaneOnly { static var verb: String { "stack create" } }
extension StackImport: ControlPlaneOnly { static var verb: String { "stack import" } }
extension StackLs: ControlPlaneOnly { static var verb: String { "stack ls" } }
extension StackRm: ControlPlaneOnly { static var verb: String { "stack rm" } }
extension StackExport: ControlPlaneOnly { static var verb: String { "stack export" } }
extension KegPut: ControlPlaneOnly { static var verb: String { "keg put" } }
extension KegGet: ControlPlaneOnly { static var verb: String { "keg get" } }
extension KegLs: ControlPlaneOnly { static var verb: String { "keg ls" } }
extension KegCat: ControlPlaneOnly { static var verb: String { "keg cat" } }
extension KegCheckout: ControlPlaneOnly { static var verb: String { "keg checkout" } }
extension KegFsck: ControlPlaneOnly { static var verb: String { "keg fsck" } }
extension KegGC: ControlPlaneOnly { static var verb: String { "keg gc" } }
extension KegStats: ControlPlaneOnly { static var verb: String { "keg stats" } }
extension KegPin: ControlPlaneOnly { static var verb: String { "keg pin" } }
extension KegUnpin: ControlPlaneOnly { static var verb: String { "keg unpin" } }
extension RefGet: ControlPlaneOnly { static var verb: String { "ref get" } }
extension RefSet: ControlPlaneOnly { static var verb: String { "ref set" } }
extension RefRm: ControlPlaneOnly { static var verb: String { "ref rm" } }
extension RefLs: ControlPlaneOnly { static var verb: String { "ref ls" } }
extension RefHistory: ControlPlaneOnly { static var verb: String { "ref history" } }
extension RefWatchCommand: ControlPlaneOnly { static var verb: String { "ref watch" } }
