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
            spec.stdout = .fd(slave)
            spec.stderr = .fd(slave)
        } else {
            var fds: [Int32] = [-1, -1]
            guard kb_pipe_cloexec(&fds) == 0 else { throw KbuildError.syscall("pipe", "", verb: "give the run its input") }
            _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
            ends = Ends(ours: fds[1], theirs: fds[0])
            spec.stdin = .fd(fds[0])
        }
        defer { ends.closeAll() }
        let (frames, out) = AsyncStream<[UInt8]>.makeStream()
        let ended = Ended()
        let launched = spec
        try await withThrowingTaskGroup(of: Void.self) { group in
            // The input, as the client sends it (cancelled when the output is done).
            group.addTask {
                var reader = Frame.Reader()
                do {
                    for try await chunk in input {
                        for (kind, payload) in reader.frames(adding: chunk.readableBytesView) {
                            switch kind {
                            case Frame.stdin where payload.isEmpty && !tty: ends.closeOurs()
                            case Frame.stdin: try await write(payload, to: ends)
                            case Frame.resize where tty && payload.count == 4:
                                _ = kb_set_winsize(ends.ours, UInt16(payload[0]) << 8 | UInt16(payload[1]), UInt16(payload[2]) << 8 | UInt16(payload[3]))
                            default: break
                            }
                        }
                        if Task.isCancelled { return }
                    }
                } catch {
                    // The client stopped sending (it went, or its input ended): the process decides what that means.
                }
                if !tty { ends.closeOurs() }
            }
            // The process, and on a terminal its output from the master until it has ended and nothing is left.
            group.addTask {
                try await withThrowingTaskGroup(of: Void.self) { run in
                    if tty {
                        run.addTask {
                            while true {
                                let done = ended.value.load(ordering: .acquiring)
                                let bytes = readAvailable(ends.ours)
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

    /// Writes all of `bytes` to our non-blocking end, waiting a little while it is full (a process not reading).
    static func write(_ bytes: [UInt8], to ends: Ends) async throws {
        var offset = 0
        while offset < bytes.count, ends.oursOpen {
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

    /// What can be read from a non-blocking descriptor now (at most 1 MiB).
    static func readAvailable(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while out.count < 1 << 20 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }  // EAGAIN: nothing now; EIO: no process holds the terminal
            out += buffer[0..<n]
        }
        return out
    }
}
