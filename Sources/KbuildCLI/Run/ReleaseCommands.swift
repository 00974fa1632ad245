import ArgumentParser
import Foundation
import KbuildAPI
import KbuildClient
import KbuildCore
import Releases
import Cluster
import KbuildState

/// `kbuild releases APP`: the release history, newest first.
struct ReleasesList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "releases", abstract: "List an app's releases, newest first.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let list = try await global.client().releases(app)
        if json { return try printJSON(list) }
        guard !list.isEmpty else { return say("\(app) has no releases yet: git push to deploy") }
        for r in list {
            let status = r.status.isEmpty ? "" : "  [\(r.status)]"
            say("v\(r.version)  \(shortDate(r.createdAt))  \(r.createdBy)  \(r.description)  \(r.image.short)\(status)")
        }
    }
}

/// `kbuild releases:info APP vN`.
struct ReleasesInfo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "releases:info", abstract: "Show one release: image, config, formation, commit.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The release, e.g. v3.") var version: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let r = try await global.client().release(app, version: version)
        if json { return try printJSON(r) }
        say("=== \(app) v\(r.version)\(r.status.isEmpty ? "" : " [\(r.status)]")")
        say("Description:  \(r.description)")
        say("By:           \(r.createdBy) at \(shortDate(r.createdAt))")
        say("Commit:       \(r.commit ?? "-")")
        say("Image:        \(r.image)")
        say("Config:       \(r.config)")
        say("Release KID:  \(r.kid)")
        for type in r.processTypes.keys.sorted() {
            let f = r.formation[type] ?? ProcessFormation(quantity: 0)
            say("  \(type)=\(f.quantity) (\(formatMemory(f.memory)), \(f.cpus) CPU): \(r.processTypes[type]!)")
        }
    }
}

/// `kbuild releases:output APP vN`.
struct ReleasesOutput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "releases:output",
        abstract: "Show a release's release phase: its command's output and how it ended.",
        discussion: "The Procfile's release: command runs once for each release made by a deploy, config change or rollback, before its processes start."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The release, e.g. v3.") var version: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let r = try await global.client().releaseOutput(app, version: version)
        if json { return try printJSON(r) }
        let end = r.state == "running" ? "running on \(r.node)" : r.state == "succeeded" ? "succeeded" : "failed: \(r.reason ?? "")"
        say("=== \(app) v\(r.version) release phase (\(r.command.terminalSafe)): \(end)")
        writeOut(Array(r.output.utf8))
    }
}

/// `kbuild releases:rollback APP [vN]`.
struct ReleasesRollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "releases:rollback",
        abstract: "Go back to an earlier release's image and config (default: the one before the current).",
        discussion: "A rollback is itself a new release; the formation stays as it is. The image is still in the Keg, so nothing is built."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The release to go back to, e.g. v3.") var version: String?

    func run() async throws {
        var target: Int64?
        if let version {
            guard let v = Int64(version.hasPrefix("v") ? String(version.dropFirst()) : version), v > 0 else {
                throw ValidationError("invalid release \(version.debugDescription): want vN, e.g. v3")
            }
            target = v
        }
        let r = try await global.client().rollback(app, to: target)
        say("Rolled back \(app): \(r.description), now v\(r.version) (image \(r.image.short))")
    }
}

func shortDate(_ date: Date) -> String {
    let f = DateFormatter()
    f.locale = Locale(identifier: "en_US_POSIX")
    f.timeZone = TimeZone(identifier: "UTC")
    f.dateFormat = "yyyy-MM-dd HH:mm:ss'Z'"
    return f.string(from: date)
}
