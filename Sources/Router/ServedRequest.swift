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
    public var duration: Duration

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
}
