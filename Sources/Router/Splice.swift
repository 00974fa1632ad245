import NIOCore

/// An upgraded connection (a WebSocket, usually): once the backend answered
/// 101, the client's channel and the backend's are joined byte for byte, with
/// backpressure both ways, until either side closes. Both channels live on
/// the same event loop (the backend connection came from that loop's pool).
///
/// A splice closes when no byte crossed it for `upgradedIdleTimeout`, and when
/// its process left the route table (a rollout drains it) more than
/// `upgradedDrain` ago: a WebSocket then gets a close frame with status 1001
/// ("going away") on both sides, sent between frames, before the close.
final class Splice {
    let endpoint: Endpoint
    let isWebSocket: Bool
    private let shared: SharedState
    private var client: SpliceHandler?
    private var backend: SpliceHandler?
    private var lastActivity = NIODeadline.now()
    private var leftTableAt: NIODeadline?
    private var ticker: RepeatedTask?
    private var closing = false
    /// Frame boundaries of what each side sends, so a close frame never lands inside one of its frames.
    var backendFrames = WebSocketFrames()
    var clientFrames = WebSocketFrames()

    init(endpoint: Endpoint, isWebSocket: Bool, shared: SharedState) {
        self.endpoint = endpoint
        self.isWebSocket = isWebSocket
        self.shared = shared
    }

    /// Joins the two channels: each gets a `SpliceHandler` at the end of its pipeline.
    /// Call on their event loop, after their HTTP handlers are gone or about to go.
    func join(client clientChannel: any Channel, backend backendChannel: any Channel) throws -> (client: SpliceHandler, backend: SpliceHandler) {
        let client = SpliceHandler(splice: self, side: .client)
        let backend = SpliceHandler(splice: self, side: .backend)
        client.partner = backend
        backend.partner = client
        self.client = client
        self.backend = backend
        try clientChannel.pipeline.syncOperations.addHandler(client)
        try backendChannel.pipeline.syncOperations.addHandler(backend)
        let period = TimeAmount.nanoseconds(
            max(min(shared.configuration.upgradedIdleTimeout.nanoseconds, shared.configuration.upgradedDrain.nanoseconds) / 4, 10_000_000))
        let loop = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        ticker = clientChannel.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in loop.value.tick() }
        return (client, backend)
    }

    func touch() { lastActivity = .now() }

    private func tick() {
        let now = NIODeadline.now()
        if now - lastActivity > shared.configuration.upgradedIdleTimeout {
            goAway()
            return
        }
        if shared.table.snapshot().endpoints.contains(endpoint) {
            leftTableAt = nil
        } else if let since = leftTableAt {
            if now - since > shared.configuration.upgradedDrain { goAway() }
        } else {
            leftTableAt = now
        }
    }

    /// Ends the splice: a WebSocket between frames gets 1001 both ways first.
    func goAway() {
        guard !closing else { return }
        closing = true
        ticker?.cancel()
        ticker = nil
        if isWebSocket {
            // Status 1001, unmasked to the client; masked (with a zero key: RFC 6455 §5.3 asks for an
            // unpredictable one against proxy cache poisoning, which cannot arise on this hop) to the backend.
            // Each only between two of the frames that side receives; mid-frame, the close alone says it.
            if backendFrames.atBoundary { client?.send([0x88, 0x02, 0x03, 0xE9]) }
            if clientFrames.atBoundary { backend?.send([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE9]) }
        }
        client?.close()
        backend?.close()
    }

    /// One side closed: the other is closed once what it was sent is written.
    func closed(_ side: SpliceHandler.Side) {
        ticker?.cancel()
        ticker = nil
        closing = true
        switch side {
        case .client: backend?.close()
        case .backend: client?.close()
        }
        // The handlers and the splice refer to each other: let go, so all of it is freed with the channels.
        client = nil
        backend = nil
    }
}

/// One side of a splice: what its channel reads is written to the other side.
final class SpliceHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Side { case client, backend }

    private let splice: Splice
    let side: Side
    var partner: SpliceHandler?
    private var context: ChannelHandlerContext?
    private var readPending = false
    private var needsFlush = false

    init(splice: Splice, side: Side) {
        self.splice = splice
        self.side = side
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        splice.touch()
        if splice.isWebSocket {
            if side == .backend { splice.backendFrames.consume(buffer) } else { splice.clientFrames.consume(buffer) }
        }
        partner?.forward(buffer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.flushIfNeeded()
    }

    private func forward(_ buffer: ByteBuffer) {
        guard let context else { return }
        context.write(wrapOutboundOut(buffer), promise: nil)
        needsFlush = true
    }

    func flushIfNeeded() {
        guard needsFlush else { return }
        needsFlush = false
        context?.flush()
    }

    func send(_ bytes: [UInt8]) {
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
    }

    /// Reads stop while the other side cannot take more (backpressure).
    func read(context: ChannelHandlerContext) {
        if let partner, !partner.isWritable {
            readPending = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    private func resumeReading() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        splice.closed(side)
        partner = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The router shuts down: WebSockets are told it is going away.
        if event is ChannelShouldQuiesceEvent { splice.goAway() }
        // A backend channel allows half-closure (for bodies that end with the close): its end ends the splice.
        if let event = event as? ChannelEvent, case .inputClosed = event {
            close()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// Closes once what was written has gone out (a close at once would drop writes still queued).
    func close() {
        guard let context else { return }
        needsFlush = false
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        // A peer that reads nothing more does not hold the connection open for long.
        context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(10)) { context.close(promise: nil) }
    }
}

/// Where the frames of a WebSocket byte stream begin and end (RFC 6455 §5.2): only the
/// headers are read; payloads are skipped by their length.
struct WebSocketFrames {
    private var header: [UInt8] = []
    private var remaining: UInt64 = 0

    /// The stream is between two frames.
    var atBoundary: Bool { header.isEmpty && remaining == 0 }

    mutating func consume(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { bytes in
            var index = 0
            while index < bytes.count {
                if remaining > 0 {
                    let skipped = Int(min(remaining, UInt64(bytes.count - index)))
                    index += skipped
                    remaining -= UInt64(skipped)
                    continue
                }
                header.append(bytes[index])
                index += 1
                if let length = Self.payloadLength(header) {
                    header.removeAll(keepingCapacity: true)
                    remaining = length
                }
            }
        }
    }

    /// The payload length once `header` holds a whole frame header, else nil.
    static func payloadLength(_ header: [UInt8]) -> UInt64? {
        guard header.count >= 2 else { return nil }
        let short = header[1] & 0x7f
        let extended = short == 126 ? 2 : short == 127 ? 8 : 0
        let mask = header[1] & 0x80 != 0 ? 4 : 0
        guard header.count == 2 + extended + mask else { return nil }
        guard extended > 0 else { return UInt64(short) }
        return header[2..<(2 + extended)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
}
