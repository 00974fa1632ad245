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
        connection.begin(client: self, requestWasHEAD: method == .HEAD)
        phase = .awaitingResponse
        requestSentAt = .now()
        if let connectStartedAt { connectTime = requestSentAt - connectStartedAt }
        connection.write(backendHead)
        for part in replay { forward(part, to: connection) }
        if inClientRead {
            // Flushed when this read of the client's is done: with the body that came with the head, and
            // never when that body turns out malformed (the exchange fails first and the connection closes).
            needsBackendFlush = true
        } else {
            connection.flush()
            needsBackendFlush = false
        }
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

    /// The backend's response head: forwarded, or a 101 that turns the exchange into a splice.
    /// Returns how many bytes of the body went out with the head (a small body that came whole with it).
    @discardableResult
    func backendHead(_ head: ResponseHead, bytes: ByteBuffer, framing: ResponseHead.Framing, from connection: BackendConnection) -> Int {
        guard connection === backend, let context, case .awaitingResponse = phase else { return 0 }
        if head.status == 101 {
            guard let upgrade else {
                // A 101 nobody asked for: the stream cannot be understood any more.
                backend = nil
                pool.release(connection, reusable: false, snapshot: snapshot)
                gatewayError = .connectionClosed
                fail(.badGateway(app: app ?? ""))
                return 0
            }
            switchProtocols(head, bytes: bytes, to: upgrade, on: connection, context: context)
            return 0
        }
        phase = .streamingResponse
        replay.removeAll(keepingCapacity: true)
        status = head.status
        let bodyTaken = forwardHead(head, bytes: bytes, framing: framing, connection: connection, context: context)
        sentBytes += bodyTaken
        needsClientFlush = true
        return bodyTaken
    }

    func backendBody(_ buffer: ByteBuffer) {
        guard let context else { return }
        sentBytes += buffer.readableBytes
        writeBody(buffer, context: context)
        needsClientFlush = true
    }

    /// The response ended; the connection goes back to the pool if both it and the request allow.
    func backendEnded(_ connection: BackendConnection) {
        guard connection === backend, let context else { return }
        backend = nil
        pool.release(connection, reusable: connection.responseKeepAlive && requestForwarded, snapshot: snapshot)
        endResponse(context: context)
    }

    /// The backend sent what is not HTTP: a 502 before its head was forwarded, a cut connection after.
    func backendFailed(_ connection: BackendConnection, why: String) {
        guard connection === backend else { return }
        shared.logger.notice(
            "backend response is not valid HTTP/1.1",
            metadata: ["app": "\(app ?? "")", "endpoint": "\(connection.endpoint)", "error": "\(why)"])
        backend = nil
        pool.release(connection, reusable: false, snapshot: snapshot)
        switch phase {
        case .awaitingResponse:
            gatewayError = .connectionClosed
            fail(.badGateway(app: app ?? ""))
        case .streamingResponse:
            cut(.connectionClosed)
        case .idle, .answering, .connecting, .closing:
            break
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
            // A pooled connection the backend had closed (it sent nothing): the request goes again, whatever it is.
            retryOrFail(staleConnection: connection.exchanges > 1 && !connection.answered)
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
    /// Forwards the 101 and, on the next tick (out of the current reads), joins the two channels
    /// byte for byte. What the backend sent behind its 101 goes through the splice first; the client
    /// sends nothing before it has the 101 (its decoder drops what it held).
    func switchProtocols(_ head: ResponseHead, bytes: ByteBuffer, to upgrade: String, on connection: BackendConnection, context: ChannelHandlerContext) {
        guard let backendChannel = connection.channel else {
            fail(.badGateway(app: app ?? ""))
            return
        }
        let response = switchingProtocolsHead(head, bytes: bytes, allocator: context.channel.allocator)
        // What the backend sent behind its 101 (its first frames) goes through the splice once it is there.
        connection.holdForSplice(bytes.getSlice(at: bytes.readerIndex + head.length, length: bytes.readableBytes - head.length)!)
        status = 101
        phase = .closing
        backend = nil
        let served = endExchange(status: 101, closing: true)
        let clientChannel = context.channel
        let splice = Splice(endpoint: connection.endpoint, isWebSocket: upgrade.lowercased().contains("websocket"), shared: shared)
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.assumeIsolated().execute {
            let this = handler.value
            guard let context = this.context, clientChannel.isActive, backendChannel.isActive else {
                clientChannel.close(promise: nil)
                backendChannel.close(promise: nil)
                return
            }
            context.writeAndFlush(NIOAny(response), promise: nil)
            do {
                let client = clientChannel.pipeline.syncOperations
                let backend = backendChannel.pipeline.syncOperations
                // The splice handlers go last, then everything HTTP in front of them goes.
                let sides = try splice.join(client: clientChannel, backend: backendChannel)
                client.removeHandler(context: context, promise: nil)
                client.removeHandler(try client.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self), promise: nil)
                client.removeHandler(try client.handler(type: ReadObserver.self), promise: nil)
                let early = connection.takeUpgraded()
                backend.removeHandler(connection, promise: nil)
                if let early, early.readableBytes > 0 {
                    backend.fireChannelRead(NIOAny(early))
                    backend.fireChannelReadComplete()
                }
                sides.client.flushIfNeeded()
                clientChannel.read()
                backendChannel.read()
            } catch {
                this.shared.logger.notice("upgrade failed", metadata: ["app": "\(this.app ?? "")", "error": "\(error)"])
                clientChannel.close(promise: nil)
                backendChannel.close(promise: nil)
            }
        }
        shared.onServed(served)
    }
}
