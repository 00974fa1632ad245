import ArgumentParser
import Foundation
import KbuildCore
import Keg
import KegRemote

struct KegPull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Fetch an object, and for a tree all it contains that is missing here, from another kbuild host.",
        discussion: "The token is --token, else $KBUILD_TOKEN, else (only for a host on this machine: 127.0.0.1, ::1, localhost) the admin token in the data directory."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The full KID to fetch.") var kid: String
    @Option(help: "The other host's kbuild URL, e.g. http://10.0.0.2:7070.") var from: String
    @Option(help: "A token for that host.") var token: String?

    func validate() throws {
        guard let url = URL(string: from), url.scheme == "http" || url.scheme == "https", url.host != nil else {
            throw ValidationError("--from must be an http(s) URL such as http://10.0.0.2:7070, not \(from.debugQuoted)")
        }
    }

    func run() async throws {
        let wanted = try KID(parsing: kid)
        let env = ProcessInfo.processInfo.environment["KBUILD_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        let url = URL(string: from)!
        // The local admin token never leaves this machine by default.
        let local = ["127.0.0.1", "::1", "[::1]", "localhost"].contains(url.host ?? "")
        guard let secret = try token ?? env ?? (local ? AdminToken.load(from: global.dir) : nil) else {
            throw KbuildError(.unauthorized, "failed to pull \(wanted): no token for \(from) (give --token or set KBUILD_TOKEN)")
        }
        let keg = try global.openKeg()
        let report = try await KegRemote(baseURL: url, token: secret).pull(wanted, into: keg)
        print("pulled \(wanted): \(report.fetched) objects, \(formatBytes(report.bytes)); \(report.alreadyPresent) already here")
    }
}
