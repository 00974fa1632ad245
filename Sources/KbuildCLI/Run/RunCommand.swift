import ArgumentParser
import CKbuild
import Dispatch
import Foundation
import KbuildClient
import KbuildCore
import KbuildState

/// `kbuild run APP -- CMD …`: a one-off process in the app's image and config,
/// with this terminal or this input, as `heroku run` gives one.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a one-off command in an app's current image and config, on this terminal; its exit status is kbuild's.",
        discussion: """
            kbuild run APP -- CMD ARGS… runs CMD itself; kbuild run APP -- 'a shell command line' (one word with spaces) runs it \
            with /bin/sh -c. On a terminal it gets one of its own (kbuild run APP -- bash is a shell there: ^C, line editing and \
            full-screen programs work, the size follows this window); else what is piped in is its input (echo hi | kbuild run \
            APP -- cat) and its stdout and stderr stay apart. --no-tty: never a terminal. It stops if the connection goes.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Flag(name: .customLong("no-tty"), help: "No terminal for the command, even when this is one (its stdout and stderr stay apart).") var noTTY = false
    @Argument(help: "The app.") var app: String
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

    func run() async throws {
        let words = command
        guard !words.isEmpty else { throw ValidationError("nothing to run: kbuild run \(app) -- CMD") }
        let client = try global.client()
        let terminal = !noTTY && isatty(0) == 1 && isatty(1) == 1
        var rows: UInt16 = 24, columns: UInt16 = 80
        if terminal { _ = kb_get_winsize(1, &rows, &columns) }
        let request = API.Run(command: words, tty: terminal ? true : nil, rows: terminal ? rows : nil, columns: terminal ? columns : nil,
                              term: terminal ? ProcessInfo.processInfo.environment["TERM"] : nil)
        let (input, feed) = AsyncStream<[UInt8]>.makeStream()
        // This input, read on a thread of its own (a read that blocks until something is typed); its end ends the command's.
        let reader = Thread {
            var buffer = [UInt8](repeating: 0, count: 16384)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if n > 0 {
                    feed.yield(Frame.encode(Frame.stdin, buffer[0..<n]))
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    feed.yield(Frame.encode(Frame.stdin, []))
                    return
                }
            }
        }
        reader.start()
        // This terminal in raw mode while the command has it (every key goes there, ^C too), as it was after.
        var saved = [UInt8](repeating: 0, count: 256)
        let raw = terminal && kb_tty_raw(0, &saved, Int32(saved.count)) == 0
        defer { if raw { _ = kb_tty_restore(0, saved) } }
        // The window's new size when it changes.
        // (A signal source is made only to be resumed: dispatch traps when one never resumed goes.)
        var resized: (any DispatchSourceSignal)?
        if terminal {
            signal(SIGWINCH, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: SIGWINCH)
            source.setEventHandler {
                var rows: UInt16 = 0, columns: UInt16 = 0
                if kb_get_winsize(1, &rows, &columns) == 0 { feed.yield(Frame.resize(rows: rows, columns: columns)) }
            }
            source.resume()
            resized = source
        }
        defer { resized?.cancel() }
        let response = try await client.run(app, request, input: input)
        var frames = Frame.Reader()
        var status: Int32 = 125
        for try await chunk in response.body {
            for (kind, payload) in frames.frames(adding: chunk.readableBytesView) {
                switch kind {
                case Frame.stdout: writeOut(payload)
                case Frame.stderr: FileHandle.standardError.write(Data(payload))
                case Frame.error: FileHandle.standardError.write(Data(("kbuild run: " + String(decoding: payload, as: UTF8.self) + (raw ? "\r\n" : "\n")).utf8))
                case Frame.exit:
                    // The command is over, so is its input: the request ends, then the answer does.
                    status = Frame.status(payload) ?? status
                    feed.finish()
                default: break
                }
            }
        }
        feed.finish()
        throw ExitCode(status)
    }
}
