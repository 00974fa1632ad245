public import NIOCore

/// Timeouts and limits of the proxy; the defaults follow nginx's where it has one.
public struct RouterConfiguration: Sendable {
    /// How long a backend may take, from the end of the request, to send its response head (Heroku's 30 s,
    /// H12): then 504. A request body that stops arriving for `headerReadTimeout` is the client's (408). An app's
    /// own (`kbuild router:settings APP --request-timeout`) wins.
    public var requestTimeout: TimeAmount = .seconds(30)
    /// The largest request body an app takes unless its own limit says otherwise: then 413.
    public var bodyLimit = 100 << 20
    /// The largest request head (request line and header fields), and the most header fields: then 431.
    public var maxHeaderBytes = 32 << 10
    public var maxHeaderFields = 100
    /// Open connections one client address may hold (nginx `limit_conn`): the next is answered 429 and closed.
    public var maxConnectionsPerClient = 1024
    /// A WebSocket (or other upgraded connection) that carries no byte either way for this long is closed.
    public var upgradedIdleTimeout: TimeAmount = .seconds(300)
    /// How long an upgraded connection to a process that left the table may go on (the process is draining
    /// in a rollout); then a WebSocket gets a 1001 close frame and both sides are closed.
    public var upgradedDrain: TimeAmount = .seconds(10)
    /// How long a client keep-alive connection may sit idle between requests (nginx `keepalive_timeout`).
    public var clientIdleTimeout: TimeAmount = .seconds(75)
    /// How long a client may take to send a request head once it started (nginx `client_header_timeout`).
    public var headerReadTimeout: TimeAmount = .seconds(30)
    /// How long connecting to a backend may take before the next endpoint is tried.
    public var connectTimeout: TimeAmount = .seconds(5)
    /// Idle pooled backend connections older than this are closed.
    public var backendIdleTimeout: TimeAmount = .seconds(30)
    /// Idle connections kept per endpoint and event loop (nginx `keepalive`).
    public var maxIdleConnectionsPerEndpoint = 64
    /// Tries per request, counting retries on other endpoints and on fresh connections.
    public var maxAttempts = 4
    /// After a failed connect, an endpoint is tried last for this long.
    public var endpointBackoff: TimeAmount = .seconds(2)
    /// `Retry-After` seconds on the 503 page.
    public var retryAfterSeconds = 5
    /// How long graceful shutdown waits for in-flight requests before closing connections.
    public var shutdownGracePeriod: TimeAmount = .seconds(10)
    /// Event loops (threads); each owns its clients and its backend connection pool.
    public var eventLoops: Int = System.coreCount

    public init() {}
}
