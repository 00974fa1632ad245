import NIOCore
import NIOHTTP1

/// Client → router: a request's head routed and serialized for a backend, its body passed on with
/// its framing, and the requests a client pipelines held until the response before them ended.
extension ClientHandler {
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
            backend.write(ChunkedScanner.sizeLine(buffer.readableBytes))
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
