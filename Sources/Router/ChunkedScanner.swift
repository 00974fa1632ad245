import NIOCore

/// Follows a chunked body (RFC 9112 §7.1) through the bytes as they arrive, without copying them:
/// it finds where the body ends, and where its data is for a client that needs it unchunked.
///
/// Strict, as llhttp is: hex sizes of at most 15 digits, CRLF after each size and each chunk's data,
/// trailer lines ended by CRLF. Extensions after the size are skipped.
struct ChunkedScanner {
    struct Invalid: Error, CustomStringConvertible {
        var description: String { "a malformed chunked body" }
    }

    private enum State {
        case size
        /// Spaces after the size: only an extension (`;`) may follow them.
        case sizeSpace
        case extensions
        case sizeLF
        case data(Int)
        case dataCR
        case dataLF
        case trailerLineStart
        case trailerLine
        case trailerLF
        case lastLF
        case done
    }

    private var state = State.size
    private var size = 0
    private var digits = 0

    var isDone: Bool {
        if case .done = state { true } else { false }
    }

    /// Reads `bytes` as the next part of the body; `data` is called with each run of chunk data.
    /// Returns how many bytes belong to the body: all of them, or fewer when it ended within them.
    mutating func scan(_ bytes: UnsafeRawBufferPointer, data: (Range<Int>) -> Void) throws(Invalid) -> Int {
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            switch state {
            case .size:
                if let value = Self.hexValue(byte) {
                    digits += 1
                    guard digits <= 15 else { throw Invalid() }
                    size = size << 4 | value
                } else if digits > 0, byte == UInt8(ascii: ";") {
                    state = .extensions
                } else if digits > 0, byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") {
                    state = .sizeSpace
                } else if digits > 0, byte == UInt8(ascii: "\r") {
                    state = .sizeLF
                } else {
                    throw Invalid()
                }
            case .sizeSpace:
                if byte == UInt8(ascii: ";") {
                    state = .extensions
                } else if byte != UInt8(ascii: " ") && byte != UInt8(ascii: "\t") {
                    throw Invalid()
                }
            case .extensions:
                if byte == UInt8(ascii: "\r") {
                    state = .sizeLF
                } else if byte == UInt8(ascii: "\n") || (byte < 0x20 && byte != UInt8(ascii: "\t")) {
                    throw Invalid()
                }
            case .sizeLF:
                guard byte == UInt8(ascii: "\n") else { throw Invalid() }
                state = size == 0 ? .trailerLineStart : .data(size)
                size = 0
                digits = 0
            case .data(let remaining):
                let take = min(remaining, bytes.count - index)
                data(index..<(index + take))
                index += take
                state = take == remaining ? .dataCR : .data(remaining - take)
                continue
            case .dataCR:
                guard byte == UInt8(ascii: "\r") else { throw Invalid() }
                state = .dataLF
            case .dataLF:
                guard byte == UInt8(ascii: "\n") else { throw Invalid() }
                state = .size
            case .trailerLineStart:
                state = byte == UInt8(ascii: "\r") ? .lastLF : .trailerLine
                if byte == UInt8(ascii: "\n") { throw Invalid() }
            case .trailerLine:
                if byte == UInt8(ascii: "\r") {
                    state = .trailerLF
                } else if byte == UInt8(ascii: "\n") {
                    throw Invalid()
                }
            case .trailerLF:
                guard byte == UInt8(ascii: "\n") else { throw Invalid() }
                state = .trailerLineStart
            case .lastLF:
                guard byte == UInt8(ascii: "\n") else { throw Invalid() }
                state = .done
                return index + 1
            case .done:
                return index
            }
            index += 1
        }
        return index
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}

extension ChunkedScanner {
    /// The size line of a chunk the router writes itself (a request body it chunks again, a body
    /// without framing chunked for an HTTP/1.1 client): `1a\r\n`.
    static func sizeLine(_ count: Int) -> ByteBuffer {
        ByteBuffer(string: String(count, radix: 16) + "\r\n")
    }
}
