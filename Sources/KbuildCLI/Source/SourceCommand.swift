import ArgumentParser
import Foundation
import GitSource
import KbuildCore

struct SourceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "source",
        abstract: "Sources: git commits read into the Keg.",
        subcommands: [SourceImportCommand.self]
    )
}

struct SourceImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Read a commit's tree into the Keg and print its source KID.",
        discussion: """
            Without --repository it opens the repository git's environment names, so that it works inside a pre-receive hook, where the pushed objects are still in git's quarantine. Refused, with the path named: .git entries, . or .. names, symlinks pointing outside the tree, submodules, files over --max-file-size; nothing is stored then.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "The repository (default: the one git's environment names).") var repository: String?
    @Option(help: "Largest file accepted, e.g. 100M.") var maxFileSize = "100M"
    @Flag(help: "JSON output.") var json = false
    @Argument(help: "A commit, branch or tag.") var revision: String

    struct Row: Encodable {
        var source: KID
        var commit: String
        var author: String
        var email: String
        var message: String
        var files: Int
        var bytes: UInt64
    }

    func run() async throws {
        let limits = SourceLimits(maxFileSize: try parseBytes(maxFileSize, what: "--max-file-size"))
        let imported = try GitSource.importTree(repository: repository, revision: revision, into: try global.openKeg(), limits: limits)
        if json {
            return try printJSON(Row(source: imported.tree, commit: imported.commit, author: imported.author, email: imported.authorEmail,
                                     message: imported.message, files: imported.files, bytes: imported.bytes))
        }
        print("\(imported.tree) \(imported.commit.prefix(12)) \(imported.files) files, \(formatBytes(imported.bytes))")
    }
}
