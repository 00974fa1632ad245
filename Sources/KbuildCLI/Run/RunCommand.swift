import ArgumentParser
import Foundation
import KbuildAPI
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
        var pending: [UInt8] = []
        var status: Int32 = 125
        for try await chunk in response.body {
            pending += chunk.readableBytesView
            while pending.count >= 5 {
                let n = Int(pending[1]) << 24 | Int(pending[2]) << 16 | Int(pending[3]) << 8 | Int(pending[4])
                guard pending.count >= 5 + n else { break }
                let payload = Array(pending[5..<(5 + n)])
                switch pending[0] {
                case RunFrame.stdout: writeOut(payload)
                case RunFrame.stderr: FileHandle.standardError.write(Data(payload))
                case RunFrame.error: FileHandle.standardError.write(Data(("kbuild run: " + String(decoding: payload, as: UTF8.self) + "\n").utf8))
                case RunFrame.exit where payload.count == 4:
                    status = Int32(bitPattern: UInt32(payload[0]) << 24 | UInt32(payload[1]) << 16 | UInt32(payload[2]) << 8 | UInt32(payload[3]))
                default: break
                }
                pending.removeFirst(5 + n)
            }
        }
        throw ExitCode(status)
    }
}
