import Logging
import NIOCore
import NIOHTTP1

/// The proxy for one client connection: the last handler of its pipeline,
/// after NIO's request decoder (which hands it one request at a time; an HTTP/2
/// stream's codec on HTTPS).
///
/// For each request it resolves the Host header to a route, then either
/// answers with the router's own page or runs an exchange with a backend
/// connection from its event loop's pool, streaming both bodies with
/// backpressure. All of it happens on the client channel's event loop.
///
/// Responses go out as bytes on an HTTP/1 connection (the backend's head rewritten by
/// `ResponseHead`, its body as it came) and as `HTTPServerResponsePart`s on an HTTP/2
/// stream, whose codec frames them (`ClientHandler+Output`).
final class ClientHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = Never
    typealias OutboundOut = Never

    /// What the handler writes to its channel.
    enum Output {
        /// Bytes, to an HTTP/1 connection (plain or TLS).
        case http1
        /// `HTTPServerResponsePart`s, to an HTTP/2 stream's codec.
        case http2Stream
    }

    /// Where the current request stands.
    enum Phase {
        /// Waiting for a request head.
        case idle
        /// The router answers itself (error page) once the request ends.
        case answering(ErrorPage)
        /// Connecting to a backend; request parts are buffered meanwhile.
        case connecting
        /// The request is going to `backend`; its response head has not come yet.
        case awaitingResponse
        /// The response head was forwarded; its body streams to the client.
        case streamingResponse
        /// The response was sent and the connection closes.
        case closing
    }

    let shared: SharedState
    let pool: BackendPool
    var context: ChannelHandlerContext?
    var phase = Phase.idle
    var clientAddress = ""
    var localPort = ""
    /// Where the pool's clock keeps this handler while its connection is open (its timeouts are checked
    /// by `tick`, every `SharedState.tickPeriod`).
    var clockIndex: Int?

    // Timers, checked by `tick`.
    var idleSince = NIODeadline.now()
    var headStartedAt: NIODeadline?
    var requestSentAt = NIODeadline.now()

    // The current exchange.
    var exchangeID = 0
    var started = NIODeadline.now()
    var method = HTTPMethod.GET
    var uri = ""
    var requestVersion = HTTPVersion.http1_1
    var clientKeepAlive = true
    var requestID = ""
    var host = ""
    /// `http`, or `https` behind TLS.
    let scheme: String
    /// When the first backend connection was asked for, and how long getting one took.
    var connectStartedAt: NIODeadline?
    var connectTime: TimeAmount?
    /// Response body bytes written to the client.
    var sentBytes = 0
    var receivedBodyBytes = 0
    /// Whether the head sent to the backend frames a body (a length, or chunked).
    var bodyFramed = true
    /// When the client last sent body bytes (a body that stops arriving times out: 408, H28).
    var lastBodyAt = NIODeadline.now()
    /// The app's limits for the current request.
    var requestTimeout = TimeAmount.seconds(30)
    var bodyLimit = Int.max
    /// What went wrong with the backend, for the 502's log line: refused, or closed without answering.
    var gatewayError = RouterError.connectionRefused
    /// The router cut the exchange short: why, for the log line.
    var exchangeError: RouterError?
    /// The protocol the client asked to upgrade to (`websocket`), nil for a plain request.
    var upgrade: String?
    /// The client's address was over its connection limit when this connection came: answer 429 and close.
    let overLimit: Bool
    /// The response was sent and the output closed; what the client still sends is read and dropped for
    /// a while (nginx's lingering close), so its kernel does not answer with a reset that could destroy
    /// the response before the client read it.
    var discardsInput = false
    /// Unique per request (a client's X-Request-Id need not be).
    var traceID = ""
    var app: String?
    var endpoints: [Endpoint] = []
    /// The route table version the current request was routed with.
    var snapshot: Snapshot
    /// The last lookup in `snapshot`, and the Host header it was for.
    var lastRoute: Route?
    var lastRouteHost = ""
    var endpoint: Endpoint?
    var firstIndex = 0
    var endpointsTried = 0
    var attempts = 0
    /// The request head as the backend gets it, serialized once and written again on a retry.
    var backendHead = ByteBuffer()
    /// Whether the body goes to the backend in chunks (the decoder took the client's chunks apart).
    var requestChunked = false
    /// The backend's body has no framing (it ends with the close): an HTTP/1.1 client gets it chunked.
    var rechunk = false
    var backend: BackendConnection?
    var status = 0
    var requestEnded = false
    var requestForwarded = false
    /// Request parts kept so the request can be sent again on another connection.
    var replay: [HTTPServerRequestPart] = []
    var replayBytes = 0
    var replayable = true
    var readPending = false
    /// Requests that arrived while another was in flight, answered in order.
    var pipelined = CircularBuffer<HTTPServerRequestPart>(initialCapacity: 4)
    /// Set by graceful shutdown: close after the current response.
    var quiescing = false
    var needsBackendFlush = false
    /// Between a client read's first request part and its end (`channelReadComplete`).
    var inClientRead = false
    /// Response parts were written to the client since its last flush.
    var needsClientFlush = false

    /// Bodies up to this size are kept for a retry; larger ones are not retried once sent.
    static let replayLimit = 64 * 1024

    let output: Output

    init(shared: SharedState, pool: BackendPool, scheme: String = "http", output: Output = .http1, overLimit: Bool = false) {
        self.shared = shared
        self.output = output
        self.pool = pool
        self.scheme = scheme
        self.overLimit = overLimit
        self.snapshot = shared.table.snapshot()
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    /// HTTP/1.0 keeps a connection only when asked and the body has a length; HTTP/1.1 and the HTTP/2
    /// streams (seen as HTTP/1 requests by their codec) need none of that.
    var isHTTP10: Bool { requestVersion.major == 1 && requestVersion.minor == 0 }

    // MARK: Channel lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { activate(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        pool.untrack(self)
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        activate(context: context)
        context.fireChannelActive()
    }

    func activate(context: ChannelHandlerContext) {
        guard clockIndex == nil else { return }
        clientAddress = context.channel.remoteAddress?.ipAddress ?? ""
        localPort = context.channel.localAddress?.port.map { String($0) } ?? ""
        idleSince = .now()
        pool.track(self)
        if overLimit {
            requestID = RequestID.generate(using: &pool.random)
            traceID = requestID
            clientKeepAlive = false
            // Closed at once, without lingering: a flood from one address costs the router little.
            requestEnded = true
            answer(.tooManyConnections(limit: shared.configuration.maxConnectionsPerClient))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pool.untrack(self)
        switch phase {
        case .idle, .closing:
            break
        case .answering, .connecting, .awaitingResponse, .streamingResponse:
            if let backend {
                self.backend = nil
                pool.release(backend, reusable: false, snapshot: snapshot)
            }
            exchangeError = .clientInterrupted
            shared.onServed(endExchange(status: 499, closing: true))
        }
        phase = .closing
        context.fireChannelInactive()
    }

    var isIdle: Bool {
        if case .idle = phase { true } else { false }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        quiescing = true
        if isIdle, pipelined.isEmpty { closeQuietly() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { backend?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    /// Called by the handler in front of the HTTP decoder when bytes arrive:
    /// from then on the header read timeout runs instead of the idle timeout.
    func bytesArrived() {
        if case .idle = phase, headStartedAt == nil { headStartedAt = .now() }
    }
}
