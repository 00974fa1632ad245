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
    /// The connection closed: it is never ticked again.
    var isClosed = false

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
        guard clockIndex == nil, !isClosed else { return }
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
        isClosed = true
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

    // MARK: Client → router

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inClientRead = true
        let part = unwrapInboundIn(data)
        if !pipelined.isEmpty {
            pipelined.append(part)
            return
        }
        if case .head = part {
            switch phase {
            case .idle:
                break
            case .closing:
                return
            case .answering, .connecting, .awaitingResponse, .streamingResponse:
                // A pipelined request: it waits until the current response ended.
                pipelined.append(part)
                return
            }
        }
        receive(part, context: context)
    }

    func receive(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            receiveHead(head, context: context)
        case .body(let buffer):
            receiveBodyPart(part, bytes: buffer.readableBytes)
        case .end:
            requestEnded = true
            receiveBodyPart(part, bytes: 0)
            if case .answering(let page) = phase { answer(page) }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inClientRead = false
        if needsBackendFlush, let backend {
            needsBackendFlush = false
            backend.flush()
        }
        context.fireChannelReadComplete()
    }

    /// Reads go on while a request streams, so a connection's readable interest
    /// stays registered between requests (no epoll_ctl per request); they stop
    /// only for backpressure, while connecting, and while pipelined requests wait.
    func read(context: ChannelHandlerContext) {
        if !pipelined.isEmpty {
            readPending = true
            return
        }
        switch phase {
        case .connecting:
            readPending = true
        case .awaitingResponse, .streamingResponse:
            if let backend, !backend.isWritable {
                readPending = true
            } else {
                context.read()
            }
        case .idle, .answering, .closing:
            context.read()
        }
    }

    func receiveHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        exchangeID &+= 1
        started = .now()
        headStartedAt = nil
        method = head.method
        uri = head.uri
        requestVersion = head.version
        clientKeepAlive = head.isKeepAlive
        requestEnded = false
        requestForwarded = false
        replayable = true
        replayBytes = 0
        attempts = 0
        endpointsTried = 0
        endpoint = nil
        status = 0
        connectStartedAt = nil
        connectTime = nil
        sentBytes = 0
        receivedBodyBytes = 0
        exchangeError = nil
        gatewayError = .connectionRefused

        let request = ForwardedHeaders.request(from: head.headers)
        upgrade = request.upgrade
        traceID = RequestID.generate(using: &pool.random)
        if let id = request.requestID, RequestID.isValid(id) {
            requestID = id
        } else {
            requestID = traceID
        }
        host = request.host ?? ""
        // An upgrade request is the connection's last as HTTP: its decoder stops after it.
        if upgrade != nil { clientKeepAlive = false }
        // Only `chunked` is a transfer coding the router forwards: anything else
        // (`xchunked`, `gzip, chunked`) frames the body in a way a backend may read
        // differently (request smuggling), so it is refused, never forwarded.
        let codings = head.headers["transfer-encoding"]
        let framingOK = codings.isEmpty || codings.map({ $0.lowercased().filter { $0 != " " && $0 != "\t" } }) == ["chunked"]
        let route = route(host: host)
        switch route {
        case _ where !framingOK:
            app = nil
            phase = .answering(.badRequest("Transfer-Encoding \(codings.joined(separator: ", ")) is not supported; send chunked or a Content-Length."))
        case .app(let name, let appEndpoints):
            app = name
            endpoints = appEndpoints
            let settings = snapshot.settings[name]
            requestTimeout = settings?.requestTimeout.map { .seconds(Int64($0)) } ?? shared.configuration.requestTimeout
            bodyLimit = settings?.bodyLimit ?? shared.configuration.bodyLimit
            if !request.contentLengthValid {
                clientKeepAlive = false
                phase = .answering(.badRequest("The Content-Length is not one decimal number."))
            } else if let length = request.contentLength, length > bodyLimit {
                phase = .answering(.bodyTooLarge(app: name, limit: bodyLimit))
            } else if scheme == "http", settings?.redirectHTTPS == true, let httpsPort = shared.httpsPort,
                      let bare = HostName.parse(host), upgrade == nil {
                let port = httpsPort == 443 ? "" : ":\(httpsPort)"
                phase = .answering(.redirect(location: "https://\(bare)\(port)\(head.uri.hasPrefix("/") ? head.uri : "/")"))
            }
        case .noHealthyProcess(let name):
            app = name
            phase = .answering(.noHealthyProcess(app: name))
        case .crashed(let name):
            app = name
            phase = .answering(.crashed(app: name))
        case .unknownApp(let unknownHost):
            app = nil
            phase = .answering(.unknownApp(host: unknownHost))
        case .badHost(let badHost):
            app = nil
            phase = .answering(.badHost(badHost))
        }
        if case .answering(let page) = phase {
            // A client waiting for 100 Continue sends no body, and a body framed in a
            // way the router refuses cannot be skipped: answer now and close. Others
            // are answered at the end of their body (the connection stays open),
            // or when the header timeout has passed (`tick`), however slowly it comes.
            let tooLarge = { if case .bodyTooLarge = page { true } else { false } }()
            if request.expectsContinue || !framingOK || tooLarge || !request.contentLengthValid {
                clientKeepAlive = false
                answer(page)
            }
            return
        }

        // A body goes to a backend only with its framing. HTTP/1's decoder yields a body only for a request
        // that has one; an HTTP/2 stream may carry DATA with neither (its length is the stream's end): such a
        // request with a body gets chunked, and a body on one without framing is refused (`receiveBodyPart`).
        requestChunked = request.chunked
        if request.contentLength == nil, !request.chunked, requestVersion.major == 2, [.POST, .PUT, .PATCH].contains(head.method) {
            requestChunked = true
        }
        bodyFramed = request.contentLength != nil || requestChunked
        let traceparent = request.traceparent.flatMap { TraceParent.isValid($0) ? $0 : nil } ?? TraceParent.generate(using: &pool.random)
        backendHead.clear()
        ForwardedHeaders.writeRequest(method: head.method, uri: head.uri, headers: head.headers, request: request, into: &backendHead) {
            [requestID, clientAddress, scheme, localPort, host, upgrade, requestChunked, chunkedByClient = request.chunked] out in
            out.writeStaticString("traceparent: ")
            out.writeString(traceparent)
            out.writeStaticString("\r\nx-request-id: ")
            out.writeString(requestID)
            out.writeStaticString("\r\nx-forwarded-for: ")
            if let forwardedFor = request.forwardedFor {
                out.writeString(forwardedFor)
                out.writeStaticString(", ")
            }
            out.writeString(clientAddress)
            out.writeStaticString("\r\nx-forwarded-proto: ")
            out.writeString(scheme)
            out.writeStaticString("\r\nx-forwarded-port: ")
            out.writeString(localPort)
            out.writeStaticString("\r\nx-forwarded-host: ")
            out.writeString(host)
            out.writeStaticString("\r\nhost: ")
            out.writeString(host)
            out.writeStaticString("\r\n")
            if let upgrade {
                out.writeStaticString("connection: upgrade\r\nupgrade: ")
                out.writeString(upgrade)
                out.writeStaticString("\r\n")
            }
            if requestChunked, !chunkedByClient { out.writeStaticString("transfer-encoding: chunked\r\n") }
        }

        if request.expectsContinue {
            writeHead(HTTPResponseHead(version: head.version, status: .continue), context: context)
            context.flush()
        }
        firstIndex = endpoints.count == 1 ? 0 : pool.firstIndex(app: app!, count: endpoints.count)
        startAttempt(freshConnection: false)
    }

    /// The route for `host` in the current table. A connection usually sends
    /// one Host header for its whole life, so the last answer is kept until
    /// the Host header or the table changes.
    func route(host: String) -> Route {
        let current = shared.table.snapshot()
        if current === snapshot, let lastRoute, host == lastRouteHost { return lastRoute }
        snapshot = current
        let route: Route = host.isEmpty ? .badHost("") : current.lookup(host: host)
        lastRoute = route
        lastRouteHost = host
        return route
    }

    func receiveBodyPart(_ part: HTTPServerRequestPart, bytes: Int) {
        receivedBodyBytes += bytes
        if bytes > 0 { lastBodyAt = .now() }
        if bytes > 0, !bodyFramed {
            // Body bytes on a request whose head said it had none (an HTTP/2 GET with DATA): never forwarded,
            // since the backend would read them as a next request.
            bodyFramed = true  // refused once
            refuseBody(.badRequest("A request body needs a Content-Length or chunked framing."))
            return
        }
        if receivedBodyBytes > bodyLimit, let app {
            refuseBody(.bodyTooLarge(app: app, limit: bodyLimit))
            return
        }
        switch phase {
        case .connecting:
            replay.append(part)
            replayBytes += bytes
        case .awaitingResponse, .streamingResponse:
            guard let backend else { return }
            forward(part, to: backend)
            if inClientRead {
                needsBackendFlush = true
            } else {
                // A pipelined request's parts, replayed from the queue when the response before it ended.
                backend.flush()
            }
            if replayable, case .awaitingResponse = phase {
                replayBytes += bytes
                if replayBytes > Self.replayLimit {
                    replayable = false
                    replay.removeAll(keepingCapacity: false)
                } else {
                    replay.append(part)
                }
            }
        case .idle, .answering, .closing:
            break
        }
    }

    func forward(_ part: HTTPServerRequestPart, to backend: BackendConnection) {
        switch part {
        case .head:
            break
        case .body(let buffer):
            guard requestChunked else {
                backend.write(buffer)
                return
            }
            guard buffer.readableBytes > 0 else { return }
            backend.write(ByteBuffer(string: String(buffer.readableBytes, radix: 16) + "\r\n"))
            backend.write(buffer)
            backend.write(ByteBuffer(staticString: "\r\n"))
        case .end:
            // Trailers are not passed on: few backends read them, and none may need them (RFC 9110 §6.5).
            if requestChunked { backend.write(ByteBuffer(staticString: "0\r\n\r\n")) }
            requestForwarded = true
            // The app's request timeout runs from the end of the request (Heroku's H12), not its head.
            requestSentAt = .now()
        }
    }
}

extension HTTPServerRequestPart {
    var isHead: Bool {
        if case .head = self { true } else { false }
    }
}
