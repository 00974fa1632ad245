import NIOCore
import NIOHTTP1

/// Choosing an endpoint, attaching a backend connection, retries, and the
/// backend's response on its way to the client.
extension ClientHandler {
    // MARK: Router → backend

    func startAttempt(freshConnection: Bool) {
        attempts += 1
        if connectStartedAt == nil { connectStartedAt = .now() }
        if !freshConnection || endpoint == nil {
            endpoint = nextEndpoint()
            endpointsTried += 1
        }
        let target = endpoint!
        if !freshConnection, let connection = pool.takeIdle(target) {
            attach(connection)
            return
        }
        phase = .connecting
        let id = exchangeID
        pool.connect(target).assumeIsolated().whenComplete { result in
            self.connected(result, endpoint: target, exchange: id)
        }
    }

    /// The next endpoint in round-robin order, passing over ones in backoff while others remain.
    func nextEndpoint() -> Endpoint {
        let now = NIODeadline.now()
        let count = endpoints.count
        for offset in 0..<count {
            let candidate = endpoints[(firstIndex + endpointsTried + offset) % count]
            if !pool.isBackingOff(candidate, now: now) {
                endpointsTried += offset
                return candidate
            }
        }
        return endpoints[(firstIndex + endpointsTried) % count]
    }

    func connected(_ result: Result<BackendConnection, any Error>, endpoint target: Endpoint, exchange: Int) {
        let current = exchange == exchangeID && { if case .connecting = phase { true } else { false } }()
        switch result {
        case .success(let connection):
            guard current else {
                pool.release(connection, reusable: true, snapshot: snapshot)
                return
            }
            attach(connection)
        case .failure(let error):
            pool.connectFailed(target)
            guard current else { return }
            shared.logger.notice(
                "failed to connect to backend",
                metadata: ["app": "\(app ?? "")", "endpoint": "\(target)", "error": "\(error)"])
            retryOrFail()
        }
    }

    func attach(_ connection: BackendConnection) {
        backend = connection
        connection.client = self
        connection.exchanges += 1
        connection.responseKeepAlive = true
        phase = .awaitingResponse
        requestSentAt = .now()
        if let connectStartedAt { connectTime = requestSentAt - connectStartedAt }
        connection.write(.head(backendHead))
        for part in replay { forward(part, to: connection) }
        connection.flush()
        needsBackendFlush = false
        if replayBytes > Self.replayLimit {
            replayable = false
            replay.removeAll(keepingCapacity: false)
        }
        if readPending, connection.isWritable, let context {
            readPending = false
            context.read()
        }
    }

    /// After a failure before any response byte: another try, or the 502 page.
    func retryOrFail(staleConnection: Bool = false) {
        let idempotent: Bool
        switch method {
        case .GET, .HEAD, .PUT, .DELETE, .OPTIONS, .TRACE: idempotent = true
        default: idempotent = false
        }
        let sent = { if case .connecting = phase { false } else { true } }()
        let canResend = replayable && (!sent || idempotent || staleConnection)
        guard attempts < shared.configuration.maxAttempts, canResend else {
            fail(.badGateway(app: app ?? ""))
            return
        }
        if staleConnection {
            startAttempt(freshConnection: true)
        } else if endpointsTried < endpoints.count {
            startAttempt(freshConnection: false)
        } else {
            fail(.badGateway(app: app ?? ""))
        }
    }

    // MARK: Backend → client

    func backendRead(_ part: HTTPClientResponsePart, from connection: BackendConnection) {
        guard connection === backend, let context else { return }
        switch part {
        case .head(let head):
            guard case .awaitingResponse = phase else { return }
            if head.status == .switchingProtocols {
                guard let upgrade else {
                    // A 101 nobody asked for: the stream cannot be understood any more.
                    backend = nil
                    pool.release(connection, reusable: false, snapshot: snapshot)
                    gatewayError = .connectionClosed
                    fail(.badGateway(app: app ?? ""))
                    return
                }
                switchProtocols(head, to: upgrade, on: connection, context: context)
                return
            }
            phase = .streamingResponse
            replay.removeAll(keepingCapacity: true)
            status = Int(head.status.code)
            connection.responseKeepAlive = head.isKeepAlive
            var headers = ForwardedHeaders.response(from: head.headers, requestID: requestID, traceID: traceID)
            if clientKeepAlive, isHTTP10 {
                // A HTTP/1.0 client can keep the connection only when the body has a length.
                if headers.contains(name: "content-length") || method == .HEAD || !head.status.mayHaveResponseBody {
                    headers.add(name: "connection", value: "keep-alive")
                } else {
                    clientKeepAlive = false
                }
            }
            if quiescing { clientKeepAlive = false }
            if !clientKeepAlive { headers.add(name: "connection", value: "close") }
            let version = isHTTP10 ? HTTPVersion.http1_0 : .http1_1
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: head.status, headers: headers))), promise: nil)
            needsClientFlush = true
        case .body(let buffer):
            sentBytes += buffer.readableBytes
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            needsClientFlush = true
        case .end(let trailers):
            backend = nil
            let reusable = connection.responseKeepAlive && requestForwarded
            pool.release(connection, reusable: reusable, snapshot: snapshot)
            endResponse(.end(trailers), context: context)
        }
    }

    /// One flush per backend read; none when the response's end already flushed.
    func backendReadComplete() {
        guard needsClientFlush else { return }
        needsClientFlush = false
        context?.flush()
    }

    func backendWritabilityChanged(writable: Bool) {
        if writable, readPending, let context {
            readPending = false
            context.read()
        }
    }

    /// The backend connection closed or failed during this exchange.
    func backendClosed(_ connection: BackendConnection) {
        guard connection === backend else { return }
        backend = nil
        pool.release(connection, reusable: false, snapshot: snapshot)
        switch phase {
        case .awaitingResponse:
            gatewayError = .connectionClosed
            retryOrFail(staleConnection: connection.exchanges > 1)
        case .streamingResponse:
            exchangeError = .connectionClosed
            // Part of the response is out: the client can only learn of the failure by a close.
            let served = endExchange(status: status, closing: true)
            context?.close(promise: nil)
            shared.onServed(served)
        case .idle, .answering, .connecting, .closing:
            break
        }
    }
}

/// The backend agreed to an upgrade (101): the exchange becomes a splice.
extension ClientHandler {
    /// Forwards the 101 and, once the decoders are done with the current read, joins the two
    /// channels byte for byte. The backend's decoder keeps (and on removal forwards) whatever the
    /// backend sent after its 101; the client sends nothing before it has the 101.
    func switchProtocols(_ head: HTTPResponseHead, to upgrade: String, on connection: BackendConnection, context: ChannelHandlerContext) {
        guard let backendChannel = connection.channel else {
            fail(.badGateway(app: app ?? ""))
            return
        }
        var headers = ForwardedHeaders.response(from: head.headers, requestID: requestID, traceID: traceID)
        headers.add(name: "connection", value: "upgrade")
        headers.add(name: "upgrade", value: head.headers.first(name: "upgrade") ?? upgrade)
        status = 101
        phase = .closing
        backend = nil
        let served = endExchange(status: 101, closing: true)
        let clientChannel = context.channel
        let splice = Splice(endpoint: connection.endpoint, isWebSocket: upgrade.lowercased().contains("websocket"), shared: shared)
        let response = HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers)
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.assumeIsolated().execute {
            let this = handler.value
            guard let context = this.context, clientChannel.isActive, backendChannel.isActive else {
                clientChannel.close(promise: nil)
                backendChannel.close(promise: nil)
                return
            }
            context.writeAndFlush(this.wrapOutboundOut(.head(response)), promise: nil)
            do {
                let client = clientChannel.pipeline.syncOperations
                let backend = backendChannel.pipeline.syncOperations
                // The splice handlers go last, then everything HTTP in front of them goes. A decoder leaves
                // on a later tick, handing on what it held (the backend's first frames): they are flushed then.
                let sides = try splice.join(client: clientChannel, backend: backendChannel)
                client.removeHandler(context: context, promise: nil)
                client.removeHandler(try client.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self), promise: nil)
                client.removeHandler(try client.handler(type: HTTPResponseEncoder.self), promise: nil)
                client.removeHandler(try client.handler(type: ReadObserver.self), promise: nil)
                backend.removeHandler(connection, promise: nil)
                let decoderGone = backendChannel.eventLoop.makePromise(of: Void.self)
                backend.removeHandler(try backend.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self), promise: decoderGone)
                backend.removeHandler(try backend.handler(type: HTTPRequestEncoder.self), promise: nil)
                decoderGone.futureResult.assumeIsolated().whenComplete { _ in
                    sides.client.flushIfNeeded()
                    clientChannel.read()
                    backendChannel.read()
                }
            } catch {
                this.shared.logger.notice("upgrade failed", metadata: ["app": "\(this.app ?? "")", "error": "\(error)"])
                clientChannel.close(promise: nil)
                backendChannel.close(promise: nil)
            }
        }
        shared.onServed(served)
    }
}
