import ArgumentParser
import Foundation
import KbuildAPI
import KbuildClient
import KbuildCore
import Releases
import KbuildState

/// `kbuild config APP`.
struct ConfigList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config", abstract: "Show an app's config vars.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Print KEY=VALUE lines a shell can read.") var shell = false

    func run() async throws {
        let answer = try await global.client().config(app)
        if json { return try printJSON(answer.vars) }
        let width = answer.vars.keys.map(\.count).max() ?? 0
        for key in answer.vars.keys.sorted() {
            let value = answer.vars[key]!
            say(shell ? "\(key)=\(shellQuoteValue(value))" : "\(key.padding(toLength: width, withPad: " ", startingAt: 0))  \(value)")
        }
    }
}

/// `kbuild config:get APP KEY`.
struct ConfigGet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config:get", abstract: "Print one config var's value.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The var.") var key: String

    func run() async throws {
        let answer = try await global.client().config(app)
        guard let value = answer.vars[key] else { throw KbuildError(.notFound, "\(app) has no config var \(key)") }
        print(value)
    }
}

/// `kbuild config:set APP K=V…`.
struct ConfigSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config:set",
        abstract: "Set config vars; each change makes a new release, and processes restart with it.",
        discussion: "Values are given to processes when they start; they are never written into an image, and not printed here."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "KEY=VALUE pairs.") var assignments: [String]

    func validate() throws {
        guard !assignments.isEmpty else { throw ValidationError("give at least one KEY=VALUE") }
    }

    func run() async throws {
        let set = try ConfigVars.parseAssignments(assignments)
        let answer = try await global.client().changeConfig(app, API.ConfigChange(set: set, unset: []))
        say("Set \(set.keys.sorted().joined(separator: ", ")) on \(app)\(answer.release.map { ": v\($0)" } ?? " (used from its first release)")")
    }
}

/// `kbuild config:unset APP K…`.
struct ConfigUnset: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config:unset", abstract: "Remove config vars (a new release).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "Names of the vars.") var keys: [String]

    func validate() throws {
        guard !keys.isEmpty else { throw ValidationError("give at least one name") }
    }

    func run() async throws {
        let answer = try await global.client().changeConfig(app, API.ConfigChange(set: [:], unset: keys))
        say("Unset \(keys.joined(separator: ", ")) on \(app)\(answer.release.map { ": v\($0)" } ?? "")")
    }
}

func shellQuoteValue(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
