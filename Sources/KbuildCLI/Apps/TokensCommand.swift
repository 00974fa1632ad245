import ArgumentParser
import Foundation
import KbuildCore
import KbuildServer
import KbuildState

/// `kbuild tokens:create NAME --app APP…`: a token that may act on those apps only.
struct TokensCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens:create",
        abstract: "Make a token limited to some apps (their API, git pushes, registry pulls); printed once.",
        discussion: "Give it to a teammate: kbuild login --url URL --token TOKEN. Anything else with it gets 403. Revoke with tokens:revoke NAME."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "A name for the token (who or what holds it).") var name: String
    @Option(name: .customLong("app"), help: "An app it may act on (repeat for more).") var apps: [String] = []

    func run() async throws {
        let token = if let client = try global.remoteClient() {
            try await client.createToken(API.CreateToken(name: name, apps: apps)).token
        } else {
            try await AppTokens(keg: try global.openKeg(), refs: try global.openRefs()).create(name: name, apps: apps, actor: currentActor)
        }
        say(token)
        FileHandle.standardError.write(Data("Token \(name) may act on \(apps.sorted().joined(separator: ", ")); it is shown only now.\n".utf8))
    }
}

struct TokensList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokens", abstract: "List app tokens and node and worker join tokens (names, apps, node or worker, never the tokens).")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let list = if let client = try global.remoteClient() {
            try await client.tokens()
        } else {
            try await AppTokens(keg: try global.openKeg(), refs: try global.openRefs()).list().map {
                API.TokenInfo(name: $0.name, apps: $0.apps, node: $0.node, worker: $0.worker, createdBy: $0.createdBy, createdAt: $0.createdAt)
            }
        }
        if json { return try printJSON(list.map { ["name": $0.name, "apps": $0.apps.joined(separator: ","), "node": $0.node ?? "", "worker": $0.worker ?? "", "createdBy": $0.createdBy] }) }
        for t in list {
            let reach = t.node.map { "joins as node \($0)" } ?? t.worker.map { "joins as build worker \($0)" } ?? "apps \(t.apps.joined(separator: ","))"
            say("\(t.name)  \(reach)  by \(t.createdBy) at \(shortDate(t.createdAt))")
        }
    }
}

struct TokensRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokens:revoke", abstract: "Revoke an app token (refused within a second).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The token's name.") var name: String

    func run() async throws {
        if let client = try global.remoteClient() {
            try await client.revokeToken(name)
        } else {
            try await AppTokens(keg: try global.openKeg(), refs: try global.openRefs()).revoke(name: name, actor: currentActor)
        }
        say("Revoked \(name)")
    }
}
