/// How the router treats one app's requests beyond where they go (`kbuild router:settings APP`);
/// a nil field is the router's default.
public struct AppRouting: Sendable, Equatable {
    /// Seconds the app may take to send its response head (H12 after).
    public var requestTimeout: Int?
    /// The largest request body in bytes (413 past it).
    public var bodyLimit: Int?
    /// Plain HTTP requests are redirected (308) to HTTPS.
    public var redirectHTTPS: Bool

    public init(requestTimeout: Int? = nil, bodyLimit: Int? = nil, redirectHTTPS: Bool = false) {
        self.requestTimeout = requestTimeout
        self.bodyLimit = bodyLimit
        self.redirectHTTPS = redirectHTTPS
    }
}
