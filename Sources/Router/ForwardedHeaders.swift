import NIOCore
import NIOHTTP1

/// Header rewriting between client and backend: hop-by-hop headers dropped
/// (RFC 9110 §7.6.1), forwarding and tracing headers added. The response side
/// is `ResponseHead`, which works on the backend's bytes.
enum ForwardedHeaders {
    /// What the router learned from a client's request head in one pass.
    struct Request {
        var host: String?
        var requestID: String?
        var traceparent: String?
        var forwardedFor: String?
        var expectsContinue = false
        /// The protocol asked for by `Connection: upgrade` with `Upgrade: …` (a WebSocket), nil otherwise.
        var upgrade: String?
        /// The body's framing, as the head gives it: a length (nil when none was sent), whether it is a plain
        /// decimal number (HTTP/2's codec lets `+5` and `5, 5` through; a backend gets only the number), chunked.
        var contentLength: Int?
        var contentLengthValid = true
        var chunked = false
        /// Names listed in `Connection` beyond close, keep-alive and upgrade: hop-by-hop fields too.
        var connectionTokens: [Substring] = []
    }

    /// Reads the fields the router acts on; `writeRequest` writes the rest on to the backend.
    static func request(from headers: HTTPHeaders) -> Request {
        var result = Request()
        var connectionUpgrade = false
        var upgrade: String?
        for (name, value) in headers {
            switch Name(name) {
            case .upgrade:
                upgrade = upgrade == nil ? value : ""
            case .host:
                // A second Host header is a malformed request; treat it as a bad host.
                result.host = result.host == nil ? value : ""
            case .requestID:
                result.requestID = value
            case .traceparent:
                result.traceparent = value
            case .forwardedFor:
                result.forwardedFor = result.forwardedFor.map { "\($0), \(value)" } ?? value
            case .expect:
                if value.lowercased() == "100-continue" { result.expectsContinue = true }
            case .connection:
                if collectExtraTokens(value, into: &result.connectionTokens) { connectionUpgrade = true }
            case .transferEncoding:
                result.chunked = true
            case .contentLength:
                let length = value.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) && value.utf8.count <= 18
                    ? Int(value) : nil
                if length == nil || (result.contentLength != nil && result.contentLength != length) { result.contentLengthValid = false }
                result.contentLength = result.contentLength ?? length
            case .hopByHop, .forwardedProto, .forwardedPort, .forwardedHost, .other:
                continue
            }
        }
        result.connectionTokens.removeAll(where: isFraming)
        if connectionUpgrade, let upgrade, !upgrade.isEmpty { result.upgrade = upgrade }
        return result
    }

    /// The request line and the client's fields a backend gets, serialized by hand: the client's own
    /// fields without hop-by-hop ones and without those the router sets itself (`extra` writes those,
    /// as `name: value\r\n` lines). The decoder took a chunked body's chunks apart, and the router
    /// chunks it again: `Transfer-Encoding` is `chunked`, whatever codings the client listed before it.
    static func writeRequest(
        method: HTTPMethod, uri: String, headers: HTTPHeaders, request: Request, into out: inout ByteBuffer,
        extra: (inout ByteBuffer) -> Void
    ) {
        out.writeString(method.rawValue)
        out.writeStaticString(" ")
        out.writeString(uri)
        out.writeStaticString(" HTTP/1.1\r\n")
        var wroteTransferEncoding = false
        if let length = request.contentLength {
            out.writeStaticString("content-length: ")
            out.writeString(String(length))
            out.writeStaticString("\r\n")
        }
        for (name, value) in headers {
            switch Name(name) {
            case .transferEncoding:
                guard !wroteTransferEncoding else { continue }
                wroteTransferEncoding = true
                out.writeStaticString("transfer-encoding: chunked\r\n")
                continue
            case .other:
                if !request.connectionTokens.isEmpty,
                   request.connectionTokens.contains(where: { $0.utf8.elementsEqual(name.utf8, by: { $0.asciiLowercased == $1.asciiLowercased }) }) {
                    continue
                }
            default:
                continue
            }
            out.writeString(name)
            out.writeStaticString(": ")
            out.writeString(value)
            out.writeStaticString("\r\n")
        }
        extra(&out)
        out.writeStaticString("\r\n")
    }

    /// A `Connection` token naming a header that frames the message: never removed for it (a client that
    /// lists `content-length` must not make the router forward a body without its length: smuggling).
    static func isFraming(_ token: Substring) -> Bool {
        token.utf8.equalsIgnoringASCIICase("content-length") || token.utf8.equalsIgnoringASCIICase("transfer-encoding")
    }

    /// Header names listed in Connection beyond the usual close/keep-alive/upgrade; whether `upgrade` was one.
    @discardableResult
    private static func collectExtraTokens(_ value: String, into tokens: inout [Substring]) -> Bool {
        // Split and compared without allocating: nearly every response says `keep-alive`.
        var rest = Substring(value)
        var upgrade = false
        while true {
            let comma = rest.utf8.firstIndex(of: UInt8(ascii: ","))
            let trimmed = rest[..<(comma ?? rest.endIndex)].trimmingASCIISpaces()
            let isUpgrade = trimmed.utf8.equalsIgnoringASCIICase("upgrade")
            if isUpgrade { upgrade = true }
            let usual = trimmed.utf8.isEmpty || trimmed.utf8.equalsIgnoringASCIICase("keep-alive")
                || trimmed.utf8.equalsIgnoringASCIICase("close") || isUpgrade
            if !usual { tokens.append(trimmed) }
            guard let comma else { break }
            rest = rest[rest.utf8.index(after: comma)...]
        }
        return upgrade
    }

    /// The header names the router treats specially, recognised without allocating.
    enum Name {
        case host, requestID, traceparent, forwardedFor, forwardedProto, forwardedPort, forwardedHost
        case expect, connection, transferEncoding, contentLength, upgrade, hopByHop, other

        init(_ name: String) {
            var name = name
            self = name.withUTF8 { Self.classify(UnsafeRawBufferPointer($0)) }
        }

        static func classify(_ bytes: UnsafeRawBufferPointer) -> Name {
            switch bytes.count {
            case 2: return matches(bytes, "te") ? .hopByHop : .other
            case 4: return matches(bytes, "host") ? .host : .other
            case 6: return matches(bytes, "expect") ? .expect : .other
            case 7:
                if matches(bytes, "trailer") { return .hopByHop }
                return matches(bytes, "upgrade") ? .upgrade : .other
            case 10:
                if matches(bytes, "connection") { return .connection }
                return matches(bytes, "keep-alive") ? .hopByHop : .other
            case 11: return matches(bytes, "traceparent") ? .traceparent : .other
            case 12: return matches(bytes, "x-request-id") ? .requestID : .other
            case 14: return matches(bytes, "content-length") ? .contentLength : .other
            case 15: return matches(bytes, "x-forwarded-for") ? .forwardedFor : .other
            case 16:
                if matches(bytes, "x-forwarded-host") { return .forwardedHost }
                if matches(bytes, "x-forwarded-port") { return .forwardedPort }
                return matches(bytes, "proxy-connection") ? .hopByHop : .other
            case 17:
                if matches(bytes, "x-forwarded-proto") { return .forwardedProto }
                return matches(bytes, "transfer-encoding") ? .transferEncoding : .other
            default: return .other
            }
        }

        /// ASCII case-insensitive equality with a lowercase literal of the same length.
        private static func matches(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
            lowercase.withUTF8Buffer { expected in
                for index in 0..<expected.count where bytes[index] | 0x20 != expected[index] {
                    // `| 0x20` folds letters only; '-' (0x2d) is unchanged by it.
                    return false
                }
                return true
            }
        }
    }
}

extension UInt8 {
    /// The byte with ASCII letters folded to lowercase (header names compare case-insensitively).
    var asciiLowercased: UInt8 { self >= UInt8(ascii: "A") && self <= UInt8(ascii: "Z") ? self | 0x20 : self }
}

extension Substring.UTF8View {
    /// ASCII case-insensitive equality with a lowercase literal.
    fileprivate func equalsIgnoringASCIICase(_ lowercase: StaticString) -> Bool {
        guard count == lowercase.utf8CodeUnitCount else { return false }
        return lowercase.withUTF8Buffer { expected in
            zip(self, expected).allSatisfy { $0.asciiLowercased == $1 }
        }
    }
}

extension Substring {
    fileprivate func trimmingASCIISpaces() -> Substring {
        var bytes = utf8
        while let first = bytes.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { bytes = bytes.dropFirst() }
        while let last = bytes.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { bytes = bytes.dropLast() }
        return Substring(bytes)
    }
}
