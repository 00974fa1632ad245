import KbuildCore
import Foundation
import Glibc
import Synchronization
import KbuildState

/// A build's log as it is written: a file under `<data>/builds/logs/` that the
/// pusher's hook follows (`BuildLog.follow`), stored in the Keg when the build ends.
public final class BuildLog: Sendable {
    public let path: String
    private let fd: Int32
    private let lock = Mutex(())

    public init(path: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KbuildError.syscall("open", path, verb: "write the build log") }
    }

    deinit { close(fd) }

    public func write(_ bytes: [UInt8]) {
        lock.withLock { _ in
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return }
                    offset += n
                }
            }
        }
    }

    /// A Heroku-style step: `-----> text`.
    public func step(_ text: String) { write(Array("-----> \(text)\n".utf8)) }
    /// A detail under a step, indented to line up with the step's text.
    public func detail(_ text: String) { write(Array("       \(text)\n".utf8)) }

    /// Reads what is new in the log at `path` from `offset` (at most `max`
    /// bytes), returning the bytes and the next offset (empty when nothing is
    /// new or no file yet).
    public static func read(_ path: String, from offset: UInt64, max: Int = .max) -> ([UInt8], UInt64) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return ([], offset) }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var at = offset
        while out.count < max {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, Swift.min($0.count, max - out.count), off_t(at)) }
            if n <= 0 { break }
            out.append(contentsOf: buffer[0..<n])
            at += UInt64(n)
        }
        return (out, at)
    }
}
