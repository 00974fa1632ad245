import ArgumentParser
import Foundation
import KbuildAPI
import KbuildClient
import KbuildCore
import KbuildState

/// `kbuild apps:info APP`.
struct AppsInfo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "apps:info", abstract: "Show an app: release, processes, domains.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let info = try await global.client().app(app)
        if json { return try printJSON(info) }
        say("=== \(info.name)")
        say("Stack:     \(info.stack) (deploys \(info.deployBranch))")
        say("Created:   \(shortDate(info.createdAt)) by \(info.createdBy)")
        if let r = info.release {
            say("Release:   v\(r.version) \(r.description) (image \(r.image.short)\(r.commit.map { ", commit \($0.prefix(7))" } ?? ""))")
        } else {
            say("Release:   none yet (git push to deploy)")
        }
        if let rollout = info.rollout {
            say("Rollout:   v\(rollout.version) \(rollout.state.rawValue)\(rollout.reason.map { ": \($0)" } ?? "")")
        }
        // The router's port, when its kbuild up runs on this machine (from another machine it is not known here).
        let local = try global.remoteClient() == nil
        let port = (local ? try? String(contentsOf: global.dir.routerURLFile, encoding: .utf8) : nil).flatMap { $0.split(separator: ":").last }
            .map { ":" + $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
        let urls = ["\(info.name).localhost"] + info.domains
        say("Web:       " + urls.map { "http://\($0)\(port)/" }.joined(separator: ", "))
        for p in info.processes { say("  \(p.name)  \(p.state.rawValue)  v\(p.release.map(String.init) ?? "-")  \(p.node)  pid \(p.hostPID.map(String.init) ?? "-")") }
    }
}

/// `kbuild apps:destroy APP`.
struct AppsDestroy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apps:destroy",
        abstract: "Delete an app: its processes stop, its repository and refs go (objects go at the next keg gc).",
        discussion: "Asks you to type the app's name; --confirm APP answers in advance (for scripts)."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Option(help: "The app's name again, to confirm without a prompt.") var confirm: String?
    @Flag(help: "Destroy its volumes and their data too (without it, an app with volumes is not destroyed).") var volumes = false

    func run() async throws {
        try confirmDestroy(app, given: confirm, warning: "This deletes \(app), its processes and its repository\(volumes ? ", and its volumes' data" : "").")
        try await global.client().destroyApp(app, volumes: volumes)
        say("Destroyed \(app)")
    }
}

/// `kbuild domains APP`, `domains:add APP DOMAIN`, `domains:remove APP DOMAIN`.
struct DomainsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "domains", abstract: "List the domains the router serves an app at.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let list = try await global.client().domains(app)
        if json { return try printJSON(list) }
        say("\(app).localhost")
        for d in list { say(d) }
    }
}

struct DomainsAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "domains:add", abstract: "Serve an app at a domain too (routed by Host header).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The domain, e.g. www.example.com.") var domain: String

    func run() async throws {
        _ = try await global.client().addDomain(app, domain)
        say("Added \(domain.lowercased()) to \(app)")
    }
}

struct DomainsRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "domains:remove", abstract: "Stop serving an app at a domain.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The domain.") var domain: String

    func run() async throws {
        _ = try await global.client().removeDomain(app, domain)
        say("Removed \(domain.lowercased()) from \(app)")
    }
}

/// `kbuild login [--url URL]`: keeps the API's URL and a token for later commands.
struct LoginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "login",
        abstract: "Store kbuild's URL and your token for the other commands.",
        discussion: "The token is read from --token, else from stdin (a terminal prompts). It is checked against the API before it is stored, in a file only you can read."
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "kbuild's URL (default: the kbuild up of this machine).") var url: String?
    @Option(help: "The token (default: read from stdin).") var token: String?

    func run() async throws {
        var given = url
        if given == nil { given = (try? String(contentsOf: global.dir.serverURLFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) }
        guard let given else { throw ValidationError("give --url http://HOST:PORT (no kbuild up runs on \(global.dir.root.path))") }
        let base = try GlobalOptions.checkURL(given, from: "--url")
        var secret = token
        if secret == nil {
            if isatty(0) == 1 { FileHandle.standardError.write(Data("Token: ".utf8)) }
            secret = readLine()?.trimmingCharacters(in: .whitespaces)
        }
        guard let secret, !secret.isEmpty else { throw ValidationError("no token given") }
        _ = try await KbuildClient(base: base, token: secret, actor: currentActor).apps()
        let path = Credentials.file
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let data = try JSONEncoder().encode(Credentials(url: base, token: secret))
        let fd = open(path + ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KbuildError.syscall("open", path + ".tmp", verb: "store the token") }
        _ = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard rename(path + ".tmp", path) == 0 else { throw KbuildError.syscall("rename", path, verb: "store the token") }
        say("Logged in to \(base) (token stored in \(path))")
    }
}

/// `kbuild router:settings APP [--request-timeout SECONDS|default] [--body-limit SIZE|default]`.
struct RouterSettingsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "router:settings",
        abstract: "Show or set how the router treats an app's requests: request timeout, body limit, redirect to HTTPS.",
        discussion: """
            Without options, shows the settings. The request timeout is how long the app may take, from the end
            of a request, to send its response head before the router answers 504 (Heroku's H12); the body limit is the largest request
            body the router passes on (413 past it). `default` goes back to the router's own (kbuild up
            --request-timeout, 30 s; 100M).
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Option(help: ArgumentHelp("Seconds, 1 to 3600, or default.", valueName: "seconds")) var requestTimeout: String?
    @Option(help: ArgumentHelp("Bytes (e.g. 10M, 1G), 1K to 10G, or default.", valueName: "size")) var bodyLimit: String?
    @Option(help: ArgumentHelp("on: plain HTTP requests get a 308 to the same URL over HTTPS; off (the default).", valueName: "on|off"))
    var redirectHttps: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let client = try global.client()
        var settings = try await client.routerSettings(app)
        if requestTimeout != nil || bodyLimit != nil || redirectHttps != nil {
            if let redirectHttps {
                guard ["on", "off"].contains(redirectHttps) else { throw ValidationError("--redirect-https must be on or off, not \(redirectHttps)") }
                settings.redirectHTTPS = redirectHttps == "on" ? true : nil
            }
            if let requestTimeout {
                if requestTimeout == "default" {
                    settings.requestTimeout = nil
                } else {
                    guard let seconds = Int(requestTimeout.hasSuffix("s") ? String(requestTimeout.dropLast()) : requestTimeout) else {
                        throw ValidationError("--request-timeout must be whole seconds (e.g. 60) or default, not \(requestTimeout)")
                    }
                    settings.requestTimeout = seconds
                }
            }
            if let bodyLimit {
                if bodyLimit == "default" {
                    settings.bodyLimit = nil
                } else {
                    let bytes = try parseBytes(bodyLimit, what: "--body-limit")
                    guard bytes <= UInt64(Int.max) else { throw ValidationError("--body-limit is too large: at most 10G") }
                    settings.bodyLimit = Int(bytes)
                }
            }
            settings = try await client.setRouterSettings(app, settings)
        }
        if json { return try printJSON(settings) }
        say("request timeout  \(settings.requestTimeout.map { "\($0) s" } ?? "default (the router's, 30 s unless kbuild up --request-timeout)")")
        say("body limit       \(settings.bodyLimit.map { formatMemory(UInt64($0)) } ?? "default (100M)")")
        say("redirect https   \(settings.redirectHTTPS == true ? "on (plain HTTP gets a 308 to HTTPS)" : "off")")
    }
}
