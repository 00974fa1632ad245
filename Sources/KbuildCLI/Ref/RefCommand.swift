import ArgumentParser
import Foundation
import KbuildCore
import KbuildState

struct RefCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ref",
        abstract: "The ref store: names that point at KIDs, with history and watch.",
        subcommands: [RefGet.self, RefSet.self, RefRm.self, RefLs.self, RefHistory.self, RefWatchCommand.self]
    )
}

struct RefGet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Print the KID a ref points at.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The ref name, e.g. apps/web/release.") var name: String

    func run() async throws {
        let ref = try RefName(name)
        guard let value = try await global.openRefs().get(ref) else {
            throw KbuildError(.notFound, "failed to get ref \(ref): no such ref")
        }
        print(value.kid)
    }
}

struct RefSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Point a ref at a KID (compare-and-swap with --expect or --create).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The ref name.") var name: String
    @Argument(help: "The full KID to point at.") var kid: String
    @Option(help: "Only if the ref now holds this KID.") var expect: String?
    @Flag(help: "Only if the ref does not exist.") var create = false

    func validate() throws {
        if expect != nil && create { throw ValidationError("--expect and --create exclude each other") }
    }

    func run() async throws {
        let ref = try RefName(name)
        let value = try KID(parsing: kid)
        let expectation: RefExpectation = create ? .absent : try expect.map { .value(try KID(parsing: $0)) } ?? .any
        let change = try await global.openRefs().compareAndSwap(ref, to: value, expecting: expectation, actor: currentActor)
        print("\(ref) v\(change.version) -> \(value) (revision \(change.revision))")
    }
}

struct RefRm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a ref (its history stays).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The ref name.") var name: String
    @Option(help: "Only if the ref now holds this KID.") var expect: String?

    func run() async throws {
        let expectation: RefExpectation = try expect.map { .value(try KID(parsing: $0)) } ?? .any
        try await global.openRefs().compareAndSwap(try RefName(name), to: nil, expecting: expectation, actor: currentActor)
    }
}

struct RefLs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List refs at or under a prefix.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "A prefix such as apps/web (all refs when omitted).") var prefix: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let refs = try await global.openRefs().list(prefix: try prefix.map(RefName.init))
        if json { try printJSON(refs); return }
        for r in refs { print("\(r.kid.short)  v\(r.version)  \(r.name)") }
    }
}

struct RefHistory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "history", abstract: "Every value a ref has had, newest first, with time and who.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The ref name.") var name: String
    @Option(help: "At most this many entries.") var limit: Int?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let changes = try await global.openRefs().history(try RefName(name), limit: limit)
        if json { try printJSON(changes); return }
        let f = ISO8601DateFormatter()
        for c in changes {
            print("v\(c.version)  \(c.new?.short ?? "(deleted) ")  \(f.string(from: c.time))  \(c.actor)  revision \(c.revision)")
        }
    }
}

struct RefWatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "watch", abstract: "Print changes under a prefix as they happen, one JSON object a line.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "A prefix (all refs when omitted).") var prefix: String?
    @Option(help: "Replay changes after this revision first (default: only new ones).") var after: Int64?

    func run() async throws {
        let store = try global.openRefs()
        var start = Revision.zero
        if let after { start = Revision(after) } else { start = try await store.currentRevision() }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        for try await change in store.watch(prefix: try prefix.map(RefName.init), after: start) {
            say(String(decoding: try encoder.encode(change), as: UTF8.self))
        }
    }
}
