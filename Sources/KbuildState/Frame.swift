import KbuildCore

/// The frames of a stream (`kbuild run`'s output and input, a push's
/// progress): one byte of kind (1 stdout, 2 stderr, 3 exit status as 4 bytes
/// big-endian, 4 error text; from the client 5 stdin, 6 a terminal's size),
/// four bytes of length, big-endian, then the bytes. An empty frame is a
/// keepalive (an empty stdin frame: the end of the input).
public enum Frame {
    public static let stdout: UInt8 = 1, stderr: UInt8 = 2, exit: UInt8 = 3, error: UInt8 = 4
    /// From a client (`kbuild run`'s input): what was typed or piped, and a terminal's new size.
    public static let stdin: UInt8 = 5, resize: UInt8 = 6

    public static func resize(rows: UInt16, columns: UInt16) -> [UInt8] {
        encode(resize, [UInt8(rows >> 8), UInt8(rows & 0xff), UInt8(columns >> 8), UInt8(columns & 0xff)])
    }

    public static func encode(_ kind: UInt8, _ payload: some Collection<UInt8>) -> [UInt8] {
        let n = UInt32(payload.count)
        return [kind, UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + payload
    }

    public static func exitStatus(_ code: Int32) -> [UInt8] {
        let v = UInt32(bitPattern: code)
        return encode(exit, [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)])
    }

    /// The exit status a frame of kind `exit` carries.
    public static func status(_ payload: [UInt8]) -> Int32? {
        guard payload.count == 4 else { return nil }
        return Int32(bitPattern: UInt32(payload[0]) << 24 | UInt32(payload[1]) << 16 | UInt32(payload[2]) << 8 | UInt32(payload[3]))
    }

    /// Cuts whole frames off the bytes received so far; what is left waits for more.
    /// A frame over `maxFrame` bytes is refused (a sender may not make the reader hold gigabytes).
    public struct Reader: Sendable {
        private var pending: [UInt8] = []
        private let maxFrame: Int
        public init(maxFrame: Int = 64 << 20) { self.maxFrame = maxFrame }

        public mutating func frames(adding bytes: some Sequence<UInt8>) throws -> [(kind: UInt8, payload: [UInt8])] {
            pending += bytes
            var out: [(kind: UInt8, payload: [UInt8])] = []
            var at = 0
            while pending.count - at >= 5 {
                let n = Int(pending[at + 1]) << 24 | Int(pending[at + 2]) << 16 | Int(pending[at + 3]) << 8 | Int(pending[at + 4])
                guard n <= maxFrame else { throw KbuildError(.tooLarge, "a frame of \(n) bytes, over the limit of \(maxFrame)") }
                guard pending.count - at >= 5 + n else { break }
                out.append((pending[at], Array(pending[(at + 5)..<(at + 5 + n)])))
                at += 5 + n
            }
            pending.removeFirst(at)
            return out
        }
    }
}
