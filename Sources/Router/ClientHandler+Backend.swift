import NIOCore
import NIOHTTP1

/// Choosing an endpoint, attaching a backend connection, retries, and the
/// backend's response on its way to the client.
extension ClientHandler {
    // MARK: Router → backend

    func startAttempt(freshConnection: Bool) {
        attempts += 1
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
            phase = .streamingResponse
            replay.removeAll(keepingCapacity: true)
            status = Int(head.status.code)
            connection.responseKeepAlive = head.isKeepAlive
            var headers = ForwardedHeaders.response(from: head.headers, requestID: requestID, traceID: traceID)
            if clientKeepAlive, requestVersion.minor == 0 {
                // A HTTP/1.0 client can keep the connection only when the body has a length.
                if headers.contains(name: "content-length") || method == .HEAD || !head.status.mayHaveResponseBody {
                    headers.add(name: "connection", value: "keep-alive")
                } else {
                    clientKeepAlive = false
                }
            }
            if quiescing { clientKeepAlive = false }
            if !clientKeepAlive { headers.add(name: "connection", value: "close") }
            let version = requestVersion.minor == 0 ? HTTPVersion.http1_0 : .http1_1
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: head.status, headers: headers))), promise: nil)
            needsClientFlush = true
        case .body(let buffer):
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
            retryOrFail(staleConnection: connection.exchanges > 1)
        case .streamingResponse:
            // Part of the response is out: the client can only learn of the failure by a close.
            let served = endExchange(status: status, closing: true)
            context?.close(promise: nil)
            shared.onServed(served)
        case .idle, .answering, .connecting, .closing:
            break
        }
    }
}
