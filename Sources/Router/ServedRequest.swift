/// One request the router answered, reported through `onServed` when its response ended.
public struct ServedRequest: Sendable {
    /// The id the client and the app see (`X-Request-Id`): the client's own when it sent a sane one.
    public var requestID: String
    /// The router's own id for it, unique whatever the client sent (`Kbuild-Request-Id`
    /// when it differs): what `kbuild trace` finds a request by.
    public var traceID: String
    /// The app the Host header named; nil when it named none (400, 404).
    public var app: String?
    /// The endpoint that answered; nil for the router's own pages.
    public var endpoint: Endpoint?
    public var method: String
    /// The request target as sent, query included; `path` drops the query.
    public var uri: String
    /// The status sent to the client; 499 when the client left before the response ended.
    public var status: Int
    /// From the request head to the response's end.
    public var duration: Duration
    /// The Host header, as the client sent it.
    public var host = ""
    /// The client's address (the TCP peer).
    public var client = ""
    /// `http` or `https`.
    public var scheme = "http"
    /// How long getting a backend connection took (zero for a pooled one); nil when none was tried.
    public var connect: Duration?
    /// From the request's head sent to the backend to the response's end; nil when no backend answered.
    public var service: Duration?
    /// Response body bytes sent to the client.
    public var bytes = 0
    /// Why the router answered itself or cut the exchange (Heroku's H codes), nil when the app answered.
    public var error: RouterError?

    public init(
        requestID: String, traceID: String? = nil, app: String?, endpoint: Endpoint?, method: String, uri: String, status: Int,
        duration: Duration
    ) {
        self.requestID = requestID
        self.traceID = traceID ?? requestID
        self.app = app
        self.endpoint = endpoint
        self.method = method
        self.uri = uri
        self.status = status
        self.duration = duration
    }

    public var path: String {
        guard let query = uri.utf8.firstIndex(of: UInt8(ascii: "?")) else { return uri }
        return String(uri[..<query])
    }

    /// The process name of the endpoint that answered (`web.1` of `APP.web.1-ID`), or nil.
    public var dyno: String? {
        guard endpoint != nil else { return nil }
        var out: [UInt8] = []
        appendDyno(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `dyno`, appended without making Strings (every router line has one).
    private func appendDyno(to out: inout [UInt8]) {
        guard let process = endpoint?.process else { return out += "none".utf8 }
        var name = Substring(process).utf8
        if let app, name.starts(with: app.utf8), name.dropFirst(app.utf8.count).first == UInt8(ascii: ".") {
            name = name.dropFirst(app.utf8.count + 1)
        }
        out += name.prefix { $0 != UInt8(ascii: "-") }
    }

    /// Heroku's router line: `at=info method=GET path="/" host=… request_id=… fwd="…" dyno=web.1
    /// connect=1ms service=5ms status=200 bytes=123 protocol=http`, with `at=error code=H12 desc="…"` first
    /// when the router answered itself. Quotes and control characters in values are escaped.
    public var logLine: String {
        var out: [UInt8] = []
        appendLogLine(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `logLine`, appended as bytes (the request log writes thousands a second: no String is made).
    public func appendLogLine(to out: inout [UInt8]) {
        if let error {
            out += "at=error code=".utf8
            out += error.code.utf8
            out += " desc=\"".utf8
            out += error.description.utf8
            out += "\" ".utf8
        } else {
            out += "at=info ".utf8
        }
        out += "method=".utf8
        Self.appendToken(method, to: &out)
        out += " path=\"".utf8
        Self.appendQuoted(path, limit: 2048, to: &out)
        out += "\" host=".utf8
        Self.appendToken(host, to: &out)
        out += " request_id=".utf8
        Self.appendToken(requestID, to: &out)
        out += " fwd=\"".utf8
        Self.appendQuoted(client, limit: 64, to: &out)
        out += "\" dyno=".utf8
        appendDyno(to: &out)
        out += " connect=".utf8
        Self.appendMilliseconds(connect, to: &out)
        out += " service=".utf8
        Self.appendMilliseconds(service, to: &out)
        out += " status=".utf8
        Self.appendDecimal(status, to: &out)
        out += " bytes=".utf8
        Self.appendDecimal(bytes, to: &out)
        out += " protocol=".utf8
        out += scheme.utf8
    }

    static func appendMilliseconds(_ duration: Duration?, to out: inout [UInt8]) {
        if let duration {
            let (seconds, attoseconds) = duration.components
            appendDecimal(Int(seconds * 1000 + attoseconds / 1_000_000_000_000_000), to: &out)
        } else {
            out.append(UInt8(ascii: "0"))
        }
        out += "ms".utf8
    }

    /// A whole number in decimal, without making a String.
    public static func appendDecimal(_ value: Int, to out: inout [UInt8]) {
        guard value != 0 else { return out.append(UInt8(ascii: "0")) }
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var rest = value.magnitude
        withUnsafeMutableBytes(of: &digits) { buffer in
            while rest > 0 {
                buffer[count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            }
            for index in stride(from: count - 1, through: 0, by: -1) { out.append(buffer[index]) }
        }
    }

    /// A value without spaces, quotes or control characters (else `-`): the request id is checked already,
    /// the method and host come from the decoder, so this guards against what slipped past.
    static func appendToken(_ value: String, to out: inout [UInt8]) {
        let utf8 = value.utf8
        guard !utf8.isEmpty, utf8.count <= 256, utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") }) else {
            return out.append(UInt8(ascii: "-"))
        }
        out += utf8
    }

    static func appendQuoted(_ value: String, limit: Int, to out: inout [UInt8]) {
        // The common case, printable ASCII without quotes or backslashes, is copied as it is.
        if value.utf8.count <= limit, value.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            out += value.utf8
            return
        }
        for scalar in value.unicodeScalars.prefix(limit) {
            switch scalar {
            case "\"": out += "\\\"".utf8
            case "\\": out += "\\\\".utf8
            case _ where scalar.value < 0x20 || scalar.value == 0x7f:
                out += "\\x".utf8
                out += String(scalar.value, radix: 16).utf8
            default: out += String(scalar).utf8
            }
        }
    }
}

/// Why the router answered a request itself, or cut it short: Heroku's router error codes, which users
/// search for and alert on.
public enum RouterError: String, Sendable, CaseIterable {
    /// H10: the app's web processes crashed.
    case appCrashed = "H10"
    /// H12: the app sent no response head within the app's request timeout.
    case requestTimeout = "H12"
    /// H13: the backend closed the connection before or while sending its response.
    case connectionClosed = "H13"
    /// H14: the app has no healthy web process.
    case noWebProcesses = "H14"
    /// H21: no web process accepted the connection.
    case connectionRefused = "H21"
    /// H27: the client closed the connection before the response ended.
    case clientInterrupted = "H27"
    /// H28: the client went idle in the middle of its request body.
    case clientTimeout = "H28"
    /// H25 (Heroku's "HTTP restriction"): a request the router refuses: bad framing, headers too large,
    /// body too large, too many connections.
    case refused = "H25"

    public var code: String { rawValue }

    public var description: String {
        switch self {
        case .appCrashed: "App crashed"
        case .requestTimeout: "Request timeout"
        case .connectionClosed: "Connection closed without response"
        case .noWebProcesses: "No web processes running"
        case .connectionRefused: "Backend connection refused"
        case .clientInterrupted: "Client Request Interrupted"
        case .clientTimeout: "Client connection idle"
        case .refused: "HTTP Restriction"
        }
    }
}
