import ArgumentParser
import Foundation
import KbuildCore
import KbuildState

/// `kbuild certs APP`: the TLS certificates the router serves for an app's hosts.
struct CertsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "certs", abstract: "List an app's TLS certificates (served by SNI on the router's HTTPS port).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let list = try await global.client().certificates(app)
        if json { return try printJSON(list) }
        if list.isEmpty { return say("\(app) has no certificates (kbuild certs:add \(app) CERT.pem KEY.pem, or certs:generate \(app))") }
        for c in list { say(Self.describe(c)) }
    }

    static func describe(_ c: API.CertificateInfo) -> String {
        let day = ISO8601DateFormatter()
        day.formatOptions = [.withFullDate]
        let kind = c.selfSigned ? "self-signed" : "issued by \(c.issuer)"
        let serves = c.serves.isEmpty ? "serves none of the app's hosts now" : "serves \(c.serves.joined(separator: ", "))"
        return "\(c.id)  \(c.names.joined(separator: ", "))  until \(day.string(from: c.notAfter))  \(kind)  (\(c.source); \(serves))"
    }
}

/// `kbuild certs:add APP CERT.pem KEY.pem`.
struct CertsAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs:add", abstract: "Add a TLS certificate and its key for an app's domains.",
        discussion: """
            CERT.pem holds the certificate, then any intermediates; KEY.pem its private key. The certificate must be
            valid now, match the key, and cover one of the app's hosts (kbuild domains:add first). The key is kept in
            kbuild's state, readable by root only, and never shown again.
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The certificate chain, PEM, leaf first.") var cert: String
    @Argument(help: "The private key, PEM.") var key: String

    func run() async throws {
        func read(_ path: String, _ what: String) throws -> String {
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read the \(what) file \(path)") }
            guard data.count <= 256 << 10, let text = String(data: data, encoding: .utf8) else {
                throw ValidationError("the \(what) file \(path) is not a PEM text file of at most 256 KiB")
            }
            return text
        }
        let added = try await global.client().addCertificate(app, chain: try read(cert, "certificate"), key: try read(key, "key"))
        say("Added \(CertsList.describe(added))")
    }
}

/// `kbuild certs:remove APP ID`.
struct CertsRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "certs:remove", abstract: "Remove one of an app's TLS certificates (by the id kbuild certs shows).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The certificate's id.") var id: String

    func run() async throws {
        _ = try await global.client().removeCertificate(app, id)
        say("Removed certificate \(id) from \(app)")
    }
}

/// `kbuild certs:generate APP`: a self-signed certificate for trying HTTPS.
struct CertsGenerate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs:generate",
        abstract: "Make a self-signed certificate for an app's hosts (APP.localhost and its domains), for trying HTTPS; browsers will warn.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String

    func run() async throws {
        let made = try await global.client().generateCertificate(app)
        say("Generated \(CertsList.describe(made))")
    }
}
