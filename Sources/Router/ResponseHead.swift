import NIOCore
import NIOHTTP1

/// A backend's response head, read from its bytes and forwarded as bytes.
///
/// The router does not turn a response head into `HTTPHeaders` and back: it finds the fields in the
/// bytes (`parse`), learns the body's framing from them, and writes the head on with the hop-by-hop
/// fields left out and its own added (`write`). Only an HTTP/2 client, whose codec takes a
/// `HTTPResponseHead`, gets the fields as `HTTPHeaders` (`headers`).
///
/// Parsing is strict, as llhttp's is: CRLF line ends, no obs-fold, token names, no control bytes in
/// values, one Content-Length value, and never a Content-Length beside a Transfer-Encoding. A backend
/// that breaks one of these gets a 502 and its connection is not reused.
struct ResponseHead {
    /// One header field: where its name and value are in the head's bytes, and what the router makes of the name.
    struct Field {
        var name: Range<Int>
        var value: Range<Int>
        var kind: ForwardedHeaders.Name
    }

    enum Parse {
        /// The blank line has not arrived yet.
        case incomplete
        case invalid(String)
        case head(ResponseHead)
    }

    /// How the body that follows a head ends.
    enum Framing: Equatable {
        /// No body: a response to HEAD, a 1xx, 204 or 304.
        case none
        case length(Int)
        case chunked
        /// A body without framing ends when the backend closes.
        case untilClose
    }

    var status: Int
    var isHTTP11: Bool
    /// Bytes of the head, its blank line included.
    var length: Int
    /// The status line's code and reason (`200 OK`), where they are in the bytes.
    var statusText: Range<Int>
    var fields: [Field]
    var contentLength: Int?
    var chunked = false
    var transferCoded = false
    var connectionClose = false
    var connectionKeepAlive = false
    /// Names listed in `Connection` beyond close, keep-alive and upgrade: those fields are hop-by-hop too.
    var connectionTokens: [Range<Int>] = []

    /// Whether the backend's connection may carry another exchange after this response.
    var keepAlive: Bool { isHTTP11 ? !connectionClose : connectionKeepAlive && !connectionClose }

    /// The largest head a backend may send before its response is a 502.
    static let maxLength = 64 << 10

    func framing(requestWasHEAD: Bool) -> Framing {
        if requestWasHEAD || status < 200 || status == 204 || status == 304 { return .none }
        if transferCoded { return chunked ? .chunked : .untilClose }
        if let contentLength { return .length(contentLength) }
        return .untilClose
    }

    /// Reads a head from the start of `bytes`. `fields` is the caller's, reused across responses.
    static func parse(_ bytes: UnsafeRawBufferPointer, fields: inout [Field]) -> Parse {
        fields.removeAll(keepingCapacity: true)
        let count = min(bytes.count, maxLength)
        guard let statusEnd = lineEnd(bytes, from: 0, limit: count) else {
            return bytes.count >= maxLength ? .invalid("a response head longer than \(maxLength) bytes") : .incomplete
        }
        guard let statusEnd = statusEnd else { return .invalid("a line not ended by CRLF") }
        // `HTTP/1.x NNN reason`; the reason may be empty, and so may the space before it.
        guard statusEnd >= 12, matches(bytes, at: 0, "HTTP/1."),
              bytes[7] == UInt8(ascii: "0") || bytes[7] == UInt8(ascii: "1"), bytes[8] == UInt8(ascii: " "),
              (9..<12).allSatisfy({ isDigit(bytes[$0]) }), statusEnd == 12 || bytes[12] == UInt8(ascii: " ")
        else {
            return .invalid("a malformed status line")
        }
        for index in 12..<statusEnd where !isFieldByte(bytes[index]) {
            return .invalid("a control byte in the status line")
        }
        let status = (9..<12).reduce(0) { $0 * 10 + Int(bytes[$1] - UInt8(ascii: "0")) }
        guard (100...599).contains(status) else { return .invalid("status code \(status)") }
        var head = ResponseHead(
            status: status, isHTTP11: bytes[7] == UInt8(ascii: "1"), length: 0, statusText: 9..<statusEnd, fields: [])
        var start = statusEnd + 2
        while true {
            guard let found = lineEnd(bytes, from: start, limit: count) else {
                return bytes.count >= maxLength ? .invalid("a response head longer than \(maxLength) bytes") : .incomplete
            }
            guard let end = found else { return .invalid("a line not ended by CRLF") }
            if end == start {
                head.length = end + 2
                break
            }
            if bytes[start] == UInt8(ascii: " ") || bytes[start] == UInt8(ascii: "\t") {
                return .invalid("a folded header line")
            }
            var colon = start
            while colon < end, bytes[colon] != UInt8(ascii: ":") {
                guard isTokenByte(bytes[colon]) else { return .invalid("a header name that is not a token") }
                colon += 1
            }
            guard colon < end, colon > start else { return .invalid("a header line without a name and colon") }
            var valueStart = colon + 1
            var valueEnd = end
            while valueStart < valueEnd, isSpace(bytes[valueStart]) { valueStart += 1 }
            while valueEnd > valueStart, isSpace(bytes[valueEnd - 1]) { valueEnd -= 1 }
            for index in valueStart..<valueEnd where !isFieldByte(bytes[index]) {
                return .invalid("a control byte in a header value")
            }
            let kind = ForwardedHeaders.Name.classify(UnsafeRawBufferPointer(rebasing: bytes[start..<colon]))
            let value = valueStart..<valueEnd
            switch kind {
            case .contentLength:
                guard let length = decimal(bytes, value) else { return .invalid("a Content-Length that is not a number") }
                if let earlier = head.contentLength, earlier != length { return .invalid("two different Content-Lengths") }
                head.contentLength = length
            case .transferEncoding:
                // Only a body whose last coding is chunked (and chunked once) has an end of its own. Codings are
                // split at commas only, as llhttp and browsers split them: `gzip chunked` is not chunked.
                head.transferCoded = true
                guard head.readCodings(bytes, value) else { return .invalid("a malformed Transfer-Encoding") }
            case .connection:
                head.readConnection(bytes, value)
            default:
                break
            }
            fields.append(Field(name: start..<colon, value: value, kind: kind))
            start = end + 2
        }
        if head.transferCoded, head.contentLength != nil {
            return .invalid("both Content-Length and Transfer-Encoding")
        }
        if head.transferCoded, !head.chunked {
            // A body read until the close, in a coding a client may not know: never passed on.
            return .invalid("a Transfer-Encoding that does not end in chunked")
        }
        head.fields = fields
        return .head(head)
    }

    /// Whether a field goes on to the client: hop-by-hop fields and the backend's own request id do not,
    /// nor (when the router takes the chunks apart) its Transfer-Encoding.
    func forwards(_ field: Field, in bytes: UnsafeRawBufferPointer, keepTransferEncoding: Bool, keepUpgrade: Bool) -> Bool {
        switch field.kind {
        case .connection, .hopByHop, .requestID:
            return false
        case .upgrade:
            return keepUpgrade
        case .transferEncoding:
            return keepTransferEncoding
        case .contentLength:
            return true
        default:
            guard !connectionTokens.isEmpty else { return true }
            let name = UnsafeRawBufferPointer(rebasing: bytes[field.name])
            return !connectionTokens.contains { token in
                token.count == name.count && zip(bytes[token], name).allSatisfy { $0.asciiLowercased == $1.asciiLowercased }
            }
        }
    }

    /// The head as the client gets it: `version`'s status line and the forwarded fields, then `extra`
    /// (already `name: value\r\n` lines) and the blank line.
    func write(
        from bytes: UnsafeRawBufferPointer, into out: inout ByteBuffer, http10: Bool,
        keepTransferEncoding: Bool, keepUpgrade: Bool, extra: (inout ByteBuffer) -> Void
    ) {
        out.writeStaticString(http10 ? "HTTP/1.0 " : "HTTP/1.1 ")
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[statusText]))
        out.writeStaticString("\r\n")
        for field in fields where forwards(field, in: bytes, keepTransferEncoding: keepTransferEncoding, keepUpgrade: keepUpgrade) {
            out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.name]))
            out.writeStaticString(": ")
            out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.value]))
            out.writeStaticString("\r\n")
        }
        extra(&out)
        out.writeStaticString("\r\n")
    }

    /// The forwarded fields as `HTTPHeaders`, for an HTTP/2 client's codec (no Transfer-Encoding there).
    func headers(from bytes: UnsafeRawBufferPointer) -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.reserveCapacity(fields.count + 2)
        for field in fields where forwards(field, in: bytes, keepTransferEncoding: false, keepUpgrade: false) {
            headers.add(
                name: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field.name]), as: UTF8.self),
                value: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field.value]), as: UTF8.self))
        }
        return headers
    }

    private mutating func readConnection(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>) {
        _ = Self.forEachElement(bytes, value) { token in
            if Self.equals(bytes, token, "close") {
                connectionClose = true
            } else if Self.equals(bytes, token, "keep-alive") {
                connectionKeepAlive = true
            } else if !token.isEmpty, !Self.equals(bytes, token, "upgrade"),
                      !Self.equals(bytes, token, "content-length"), !Self.equals(bytes, token, "transfer-encoding") {
                // A token never removes a field that frames the body.
                connectionTokens.append(token)
            }
            return true
        }
    }

    /// One Transfer-Encoding field: a comma-separated list of codings. Whether it is well formed (tokens,
    /// `chunked` only last and once); `chunked` says whether the last coding so far is chunked.
    private mutating func readCodings(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>) -> Bool {
        Self.forEachElement(bytes, value) { coding in
            guard !coding.isEmpty else { return true }
            // Nothing may follow chunked.
            guard coding.allSatisfy({ Self.isTokenByte(bytes[$0]) }), !chunked else { return false }
            chunked = Self.equals(bytes, coding, "chunked")
            return true
        }
    }

    /// Calls `body` with each element of a comma-separated list (RFC 9110 §5.6.1), spaces around it
    /// trimmed, empty ones too, until it returns false; returns whether it never did.
    private static func forEachElement(
        _ bytes: UnsafeRawBufferPointer, _ value: Range<Int>, _ body: (Range<Int>) -> Bool
    ) -> Bool {
        var start = value.lowerBound
        while start <= value.upperBound {
            var end = start
            while end < value.upperBound, bytes[end] != UInt8(ascii: ",") { end += 1 }
            var elementStart = start
            var elementEnd = end
            while elementStart < elementEnd, isSpace(bytes[elementStart]) { elementStart += 1 }
            while elementEnd > elementStart, isSpace(bytes[elementEnd - 1]) { elementEnd -= 1 }
            guard body(elementStart..<elementEnd) else { return false }
            start = end + 1
        }
        return true
    }

    // MARK: Bytes

    /// Where the line starting at `from` ends (its CR): nil when its LF has not arrived within `limit`,
    /// `.some(nil)` when an LF comes without its CR.
    private static func lineEnd(_ bytes: UnsafeRawBufferPointer, from start: Int, limit: Int) -> Int?? {
        guard start < limit else { return nil }
        var index = start
        while index < limit {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\n") {
                return index > start && bytes[index - 1] == UInt8(ascii: "\r") ? .some(index - 1) : .some(nil)
            }
            if byte == UInt8(ascii: "\r"), index + 1 < limit, bytes[index + 1] != UInt8(ascii: "\n") {
                return .some(nil)
            }
            index += 1
        }
        return nil
    }

    private static func decimal(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        guard !range.isEmpty, range.count <= 18 else { return nil }
        var value = 0
        for index in range {
            guard isDigit(bytes[index]) else { return nil }
            value = value * 10 + Int(bytes[index] - UInt8(ascii: "0"))
        }
        return value
    }

    private static func matches(_ bytes: UnsafeRawBufferPointer, at offset: Int, _ literal: StaticString) -> Bool {
        literal.withUTF8Buffer { expected in
            offset + expected.count <= bytes.count && expected.indices.allSatisfy { bytes[offset + $0] == expected[$0] }
        }
    }

    /// ASCII case-insensitive equality with a lowercase literal.
    static func equals(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ lowercase: StaticString) -> Bool {
        lowercase.withUTF8Buffer { expected in
            range.count == expected.count && expected.indices.allSatisfy { bytes[range.lowerBound + $0].asciiLowercased == expected[$0] }
        }
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
    private static func isSpace(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
    /// Visible ASCII, space, tab and obs-text: what a field value or reason phrase may hold.
    private static func isFieldByte(_ byte: UInt8) -> Bool { byte >= 0x20 ? byte != 0x7f : byte == UInt8(ascii: "\t") }

    /// RFC 9110's `tchar`.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }
}
