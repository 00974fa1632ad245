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
    @Flag(name: [.customShort("n"), .customLong("no-stdin")], help: "No input for the command (it reads EOF), whatever this one is.") var noStdin = false
    @Argument(help: "The app.") var app: String
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

    func run() async throws {
        try await Self.oneOff(global: global, app: app, words: command, noTTY: noTTY, noStdin: noStdin)
    }

    /// Runs `words` in a one-off process of `app` (with `addon`, beside that add-on of `app`: what `pg:psql` runs),
    /// this terminal or input attached.
    static func oneOff(global: GlobalOptions, app: String, addon: String? = nil, words: [String], noTTY: Bool, noStdin: Bool) async throws {
        guard !words.isEmpty else { throw ValidationError("nothing to run: kbuild run \(app) -- CMD") }
        let client = try global.client()
        // A kbuild run in the background of its terminal (&) leaves the terminal alone: no input, no terminal.
        let background = isatty(0) == 1 && tcgetpgrp(0) != getpgrp()
        let reading = !noStdin && !background
        let terminal = reading && !noTTY && isatty(0) == 1 && isatty(1) == 1
        var rows: UInt16 = 24, columns: UInt16 = 80
        if terminal { _ = kb_get_winsize(1, &rows, &columns) }
        let request = API.Run(command: words, tty: terminal ? true : nil, rows: terminal ? rows : nil, columns: terminal ? columns : nil,
                              term: terminal ? ProcessInfo.processInfo.environment["TERM"] : nil)
        let (input, feed) = AsyncStream<[UInt8]>.makeStream()
        // This input, read on a thread of its own (a read blocks until something is typed), at most 8 pieces ahead of
        // what has been sent. Its end ends the request: the command reads EOF.
        // (Made at 0 and raised: dispatch traps when a semaphore made higher goes while below its start.)
        let room = DispatchSemaphore(value: 0)
        for _ in 0..<8 { room.signal() }
        if reading {
            let reader = Thread {
                var buffer = [UInt8](repeating: 0, count: 16384)
                while true {
                    room.wait()
                    let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                    if n > 0 {
                        feed.yield(Frame.encode(Frame.stdin, buffer[0..<n]))
                    } else if n < 0 && errno == EINTR {
                        room.signal()
                    } else {
                        feed.yield(Frame.encode(Frame.stdin, []))
                        if !terminal { feed.finish() }
                        return
                    }
                }
            }
            reader.start()
        } else {
            feed.yield(Frame.encode(Frame.stdin, []))
            feed.finish()
        }
        // This terminal in raw mode while the command has it (every key goes there, ^C too), as it was after,
        // also when kbuild is told to stop.
        var saved = [UInt8](repeating: 0, count: 256)
        let raw = terminal && kb_tty_raw(0, &saved, Int32(saved.count)) == 0
        var watched: [any DispatchSourceSignal] = []
        if raw {
            let original = saved
            for sig in [SIGTERM, SIGHUP, SIGQUIT] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig)
                source.setEventHandler {
                    _ = kb_tty_restore(0, original)
                    signal(sig, SIG_DFL)
                    raise(sig)
                }
                source.resume()
                watched.append(source)
            }
            // The window's new size when it changes.
            signal(SIGWINCH, SIG_IGN)
            let resized = DispatchSource.makeSignalSource(signal: SIGWINCH)
            resized.setEventHandler {
                var rows: UInt16 = 0, columns: UInt16 = 0
                if kb_get_winsize(1, &rows, &columns) == 0 { feed.yield(Frame.resize(rows: rows, columns: columns)) }
            }
            resized.resume()
            watched.append(resized)
        }
        // (A signal source is made only to be resumed: dispatch traps when one never resumed goes.)
        defer {
            for source in watched { source.cancel() }
            if raw { _ = kb_tty_restore(0, saved) }
        }
        var status: Int32 = 125
        try await withThrowingTaskGroup(of: Void.self) { group in
            // While the request is open, a keepalive every 20 s: a command that runs long with no input typed is no
            // idle connection to the server.
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(20))
                    feed.yield(Frame.encode(Frame.resize, []))
                }
            }
            let response = try await client.run(app, addon: addon, request, input: input, sent: { frame in
                if frame.first == Frame.stdin && frame.count > 5 { room.signal() }  // a piece read: room for the next
            })
            var frames = Frame.Reader()
            for try await chunk in response.body {
                for (kind, payload) in try frames.frames(adding: chunk.readableBytesView) {
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
            group.cancelAll()
        }
        throw ExitCode(status)
    }
}
