import NIOCore
import NIOHTTP1

/// The router's own pages, the end of an exchange, and timeouts.
extension ClientHandler {
    // MARK: Answers and the end of an exchange

    /// The router's own page in place of a backend's answer.
    func fail(_ page: ErrorPage) {
        if let backend {
            self.backend = nil
            pool.release(backend, reusable: false, snapshot: snapshot)
        }
        answer(page)
    }

    func answer(_ page: ErrorPage) {
        guard let context else { return }
        // The rest of the request body would be read for nothing: answer and close.
        if !requestEnded || quiescing { clientKeepAlive = false }
        var body = context.channel.allocator.buffer(string: page.html(requestID: requestID))
        if method == .HEAD { body.clear() }
        sentBytes = body.readableBytes
        if case .badGateway = page { exchangeError = gatewayError } else { exchangeError = page.error }
        let version = isHTTP10 ? HTTPVersion.http1_0 : .http1_1
        let head = page.head(
            version: version, requestID: requestID, traceID: traceID, keepAlive: clientKeepAlive,
            retryAfter: shared.configuration.retryAfterSeconds, bodyLength: body.readableBytes)
        rechunk = false
        writeHead(head, context: context)
        if method != .HEAD { writeBody(body, context: context) }
        status = Int(page.status.code)
        endResponse(context: context)
    }

    /// Writes the response's last part and ends the exchange. The exchange
    /// ends before the write because the write can hand this handler the next
    /// pipelined request at once.
    func endResponse(context: ChannelHandlerContext) {
        let keepOpen = clientKeepAlive && requestEnded && !quiescing
        let served = endExchange(status: status, closing: !keepOpen)
        needsClientFlush = false
        if keepOpen {
            writeEnd(context: context, promise: nil)
            shared.onServed(served)
            while case .idle = phase, let part = pipelined.popFirst() {
                receive(part, context: context)
                // The rest of that request's parts belong to it, not to the queue.
                while let next = pipelined.first, !next.isHead, !isIdle {
                    receive(pipelined.removeFirst(), context: context)
                }
            }
            if readPending, pipelined.isEmpty, isIdle {
                readPending = false
                context.read()
            }
            return
        } else {
            let linger = !requestEnded
            let written = context.eventLoop.makePromise(of: Void.self)
            writeEnd(context: context, promise: written)
            written.futureResult.assumeIsolated().whenComplete { _ in
                guard linger, context.channel.isActive else {
                    context.close(promise: nil)
                    return
                }
                self.discardsInput = true
                context.close(mode: .output).assumeIsolated().whenFailure { _ in context.close(promise: nil) }
                // Reads may have been held back (backpressure, connecting): the rest must be read to be dropped.
                if self.readPending {
                    self.readPending = false
                    context.read()
                }
                context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingeringTime) { context.close(promise: nil) }
            }
        }
        shared.onServed(served)
    }

    /// How long a closing connection's unread input is read and dropped (nginx `lingering_time` is 30 s;
    /// a client that sent a head too large or a body too long gets its answer well within this).
    static let lingeringTime = TimeAmount.seconds(2)

    /// Resets the exchange state and returns the report for `onServed`.
    func endExchange(status: Int, closing: Bool) -> ServedRequest {
        let now = NIODeadline.now()
        var served = ServedRequest(
            requestID: requestID, traceID: traceID, app: app, endpoint: endpoint,
            method: method.rawValue, uri: uri, status: status,
            duration: .nanoseconds((now - started).nanoseconds))
        served.host = host
        served.client = clientAddress
        served.scheme = scheme
        served.connect = connectTime.map { .nanoseconds($0.nanoseconds) }
        if connectTime != nil, status != 0 { served.service = .nanoseconds((now - requestSentAt).nanoseconds) }
        served.bytes = sentBytes
        served.error = exchangeError
        phase = closing ? .closing : .idle
        idleSince = .now()
        headStartedAt = nil
        replay.removeAll(keepingCapacity: true)
        replayBytes = 0
        return served
    }

    // MARK: Timeouts

    func tick() {
        let now = NIODeadline.now()
        let configuration = shared.configuration
        switch phase {
        case .idle:
            if let headStartedAt {
                if now - headStartedAt > configuration.headerReadTimeout { closeQuietly() }
            } else if now - idleSince > configuration.clientIdleTimeout {
                closeQuietly()
            }
        case .awaitingResponse where !requestForwarded:
            // The body is still coming: the app's timeout starts at its end; a body that stops arriving is
            // the client's doing (408, Heroku's H28).
            if now - lastBodyAt > configuration.headerReadTimeout {
                exchangeError = .clientTimeout
                clientKeepAlive = false
                fail(.clientTimeout(seconds: Int(configuration.headerReadTimeout.nanoseconds / 1_000_000_000)))
            }
        case .awaitingResponse:
            if now - requestSentAt > requestTimeout {
                shared.logger.notice(
                    "backend response timed out",
                    metadata: ["app": "\(app ?? "")", "endpoint": "\(endpoint.map { "\($0)" } ?? "")"])
                fail(.gatewayTimeout(app: app ?? "", seconds: Int(requestTimeout.nanoseconds / 1_000_000_000)))
            }
        case .answering(let page):
            // Belt and braces: a request the router answers itself never waits longer than a head may take.
            if now - started > configuration.headerReadTimeout { answer(page) }
        case .connecting, .streamingResponse, .closing:
            break
        }
    }

    func closeQuietly() {
        phase = .closing
        context?.close(promise: nil)
    }
}
