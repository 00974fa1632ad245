import CKbuild
import Foundation
import Hummingbird
import KbuildCore
import KbuildState
import NIOCore
import Sandbox
import Synchronization

/// An interactive one-off run (`kbuild run` with input, or on a terminal, as
/// `heroku run bash`): the request body's `Frame.stdin` frames go to the
/// process as they come while its output goes back, both on one request.
///
/// - With a terminal: a pseudo-terminal whose slave is the process's stdin,
///   stdout and stderr (and its controlling terminal: the sandbox takes it),
///   whose master kbuild reads (output, one stream) and writes (input, and the
///   size on `Frame.resize`).
/// - Without: a pipe to the process's stdin (an empty stdin frame, or the end
///   of the body, closes it, so `cat` ends), its stdout and stderr as before.
///
/// The master and the pipe are non-blocking and read or written with short
/// sleeps when they would block: no thread waits on them.
enum OneOffInput {
    static func stream(_ spec: SandboxSpec, sandbox: Sandbox, tty: Bool, rows: UInt16?, columns: UInt16?, input: RequestBody,
                       argv: [String], app: String, version: Int64, to writer: inout any ResponseBodyWriter) async throws {
        var spec = spec
        let ends: Ends
        if tty {
            var master: Int32 = -1, slave: Int32 = -1
            guard kb_openpty(&master, &slave, rows ?? 24, columns ?? 80) == 0 else {
                throw KbuildError.syscall("openpty", "/dev/ptmx", verb: "give the run a terminal")
            }
            ends = Ends(ours: master, theirs: slave)
            spec.stdin = .fd(slave)
            spec.stdinIsOwnTerminal = true
            spec.stdout = .fd(slave)
            spec.stderr = .fd(slave)
        } else {
            var fds: [Int32] = [-1, -1]
            guard kb_pipe_cloexec(&fds) == 0 else { throw KbuildError.syscall("pipe", "", verb: "give the run its input") }
            ends = Ends(ours: fds[1], theirs: fds[0])
            guard fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK) == 0 else {
                ends.closeAll()
                throw KbuildError.syscall("fcntl", "", verb: "give the run its input")
            }
            spec.stdin = .fd(fds[0])
        }
        defer { ends.closeAll() }
        let (frames, out) = AsyncStream<[UInt8]>.makeStream()
        let ended = Ended()
        let launched = spec
        try await withThrowingTaskGroup(of: Void.self) { group in
            // The input, as the client sends it (cancelled when the output is done). A body that breaks (the client
            // went) ends the run: the output stops, and leaving the group kills the process. On a terminal the client
            // sends until the exit status has come, so a body that ends before is a client gone too; a pipe's input
            // ends with the body (the process reads EOF).
            group.addTask {
                var reader = Frame.Reader(maxFrame: 64 << 10)
                do {
                    for try await chunk in input {
                        for (kind, payload) in try reader.frames(adding: chunk.readableBytesView) {
                            switch kind {
                            case Frame.stdin where payload.isEmpty && !tty: ends.closeOurs()
                            case Frame.stdin: try await write(payload, to: ends, until: ended)
                            case Frame.resize where tty && payload.count == 4:
                                _ = kb_set_winsize(ends.ours, UInt16(payload[0]) << 8 | UInt16(payload[1]), UInt16(payload[2]) << 8 | UInt16(payload[3]))
                            default: break  // an empty resize frame: the client's keepalive
                            }
                        }
                        if Task.isCancelled { return }
                    }
                } catch {
                    if !Task.isCancelled { out.finish() }
                    return
                }
                if tty, !ended.value.load(ordering: .acquiring) { out.finish() }
                if !tty { ends.closeOurs() }
            }
            // The process, and on a terminal its output from the master until it has ended and nothing is left.
            group.addTask {
                try await withThrowingTaskGroup(of: Void.self) { run in
                    if tty {
                        run.addTask {
                            var buffer = [UInt8](repeating: 0, count: 65536)
                            while true {
                                let done = ended.value.load(ordering: .acquiring)
                                let bytes = readAvailable(ends.ours, buffer: &buffer)
                                if !bytes.isEmpty { out.yield(Frame.encode(Frame.stdout, bytes)) }
                                if done { return }
                                if bytes.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
                            }
                        }
                    }
                    let status: Int32
                    do {
                        status = try await sandbox.run(launched) { s, bytes in
                            out.yield(Frame.encode(s == .stdout ? Frame.stdout : Frame.stderr, bytes))
                        }.exitStatus
                    } catch let e as KbuildError where e.code == .notFound {
                        out.yield(Frame.encode(Frame.error, Array("no command \(argv[0]) in \(app) v\(version)'s image (\(e.message))".utf8)))
                        status = 127
                    } catch {
                        out.yield(Frame.encode(Frame.error, Array("\(error)".utf8)))
                        status = 125
                    }
                    ended.value.store(true, ordering: .releasing)
                    try await run.waitForAll()
                    out.yield(Frame.exitStatus(status))
                    out.finish()
                }
            }
            for await frame in frames { try await writer.write(ByteBuffer(bytes: frame)) }
            group.cancelAll()
        }
    }

    /// Whether the process has ended (then what is left of its output is read, and that is all).
    final class Ended: Sendable {
        let value = Atomic<Bool>(false)
    }

    /// Our end and the process's end of its input (and, on a terminal, output); each closed once.
    final class Ends: Sendable {
        let ours: Int32
        let theirs: Int32
        private let open = Mutex<(ours: Bool, theirs: Bool)>((true, true))

        init(ours: Int32, theirs: Int32) {
            self.ours = ours
            self.theirs = theirs
        }

        /// The end of the input (a pipe: the process reads EOF).
        func closeOurs() {
            if open.withLock({ let was = $0.ours; $0.ours = false; return was }) { close(ours) }
        }

        func closeAll() {
            closeOurs()
            if open.withLock({ let was = $0.theirs; $0.theirs = false; return was }) { close(theirs) }
        }

        var oursOpen: Bool { open.withLock { $0.ours } }
    }

    /// Writes all of `bytes` to our non-blocking end, waiting a little while it is full (a process not reading);
    /// what is left when the process has ended is dropped.
    static func write(_ bytes: [UInt8], to ends: Ends, until ended: Ended) async throws {
        var offset = 0
        while offset < bytes.count, ends.oursOpen, !ended.value.load(ordering: .acquiring) {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(ends.ours, $0.baseAddress, $0.count) }
            if n > 0 {
                offset += n
            } else if n < 0 && (errno == EAGAIN || errno == EINTR) {
                try await Task.sleep(for: .milliseconds(5))
            } else {
                return  // the process closed its input, or ended
            }
        }
    }

    /// What can be read from a non-blocking descriptor now (at most 1 MiB), into `buffer`'s room.
    static func readAvailable(_ fd: Int32, buffer: inout [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        while out.count < 1 << 20 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }  // EAGAIN: nothing now
            out += buffer[0..<n]
        }
        return out
    }
}
