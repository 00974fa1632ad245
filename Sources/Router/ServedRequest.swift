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
        guard let process = endpoint?.process else { return nil }
        var name = Substring(process)
        if let app, name.hasPrefix(app + ".") { name = name.dropFirst(app.utf8.count + 1) }
        return String(name.split(separator: "-", maxSplits: 1).first ?? name)
    }

    /// Heroku's router line: `at=info method=GET path="/" host=… request_id=… fwd="…" dyno=web.1
    /// connect=1ms service=5ms status=200 bytes=123 protocol=http`, with `at=error code=H12 desc="…"` first
    /// when the router answered itself. Quotes and control characters in values are escaped.
    public var logLine: String {
        var out = ""
        out.reserveCapacity(200 + uri.utf8.count)
        if let error {
            out += "at=error code=\(error.code) desc=\"\(error.description)\" "
        } else {
            out += "at=info "
        }
        out += "method=\(Self.token(method)) path=\"\(Self.quoted(path, limit: 2048))\" host=\(Self.token(host)) "
        out += "request_id=\(Self.token(requestID)) fwd=\"\(Self.quoted(client, limit: 64))\" dyno=\(dyno ?? "none") "
        out += "connect=\(Self.milliseconds(connect)) service=\(Self.milliseconds(service)) status=\(status) bytes=\(bytes) protocol=\(scheme)"
        return out
    }

    static func milliseconds(_ duration: Duration?) -> String {
        guard let duration else { return "0ms" }
        let (seconds, attoseconds) = duration.components
        return "\(seconds * 1000 + attoseconds / 1_000_000_000_000_000)ms"
    }

    /// A value without spaces, quotes or control characters (else `-`): the request id is checked already,
    /// the method and host come from the decoder, so this guards against what slipped past.
    static func token(_ value: String) -> String {
        guard !value.isEmpty, value.utf8.count <= 256,
              value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") }) else { return "-" }
        return value
    }

    static func quoted(_ value: String, limit: Int) -> String {
        var out = ""
        for scalar in value.unicodeScalars.prefix(limit) {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20 || scalar.value == 0x7f: out += "\\x" + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
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
    /// H28: the client sent its request head too slowly (slowloris), or went idle mid-body.
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
