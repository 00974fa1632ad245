import ArgumentParser
import Foundation
import KbuildClient
import KbuildCore
import KbuildState

/// `kbuild run APP -- CMD …`: a one-off process in the app's image and config.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a one-off command in an app's current image and config; its output streams here, its exit status is kbuild's.",
        discussion: "kbuild run APP -- CMD ARGS… runs CMD itself; kbuild run APP -- 'a shell command line' (one word with spaces) runs it with /bin/sh -c. It has no stdin, and stops if you interrupt it."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

    func run() async throws {
        let words = command
        guard !words.isEmpty else { throw ValidationError("nothing to run: kbuild run \(app) -- CMD") }
        let response = try await global.client().run(app, API.Run(command: words))
        var reader = Frame.Reader()
        var status: Int32 = 125
        for try await chunk in response.body {
            for (kind, payload) in reader.frames(adding: chunk.readableBytesView) {
                switch kind {
                case Frame.stdout: writeOut(payload)
                case Frame.stderr: FileHandle.standardError.write(Data(payload))
                case Frame.error: FileHandle.standardError.write(Data(("kbuild run: " + String(decoding: payload, as: UTF8.self) + "\n").utf8))
                case Frame.exit: status = Frame.status(payload) ?? status
                default: break
                }
            }
        }
        throw ExitCode(status)
    }
}
