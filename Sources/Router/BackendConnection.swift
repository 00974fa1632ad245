import NIOCore

/// One keep-alive HTTP/1.1 connection to an endpoint, and the only handler of its channel: requests go
/// out as the bytes the exchange serialized, and responses come in as bytes that are forwarded, not
/// parsed into messages. It reads only what it must: the response head (`ResponseHead`) and where the
/// body ends (its length, its chunks, or the close).
///
/// While an exchange uses it, `client` is set and every part of the response goes straight to that
/// client handler, on the same event loop; while pooled, `client` is nil and anything the backend sends
/// (or its close) retires it.
final class BackendConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Where the current response stands.
    private enum Reading {
        case head
        case length(remaining: Int)
        case chunked
        case untilClose
    }

    let endpoint: Endpoint
    private unowned let pool: BackendPool
    private var context: ChannelHandlerContext?

    /// The exchange this connection serves; nil while pooled.
    var client: ClientHandler?
    /// Exchanges started on this connection; more than one means it came from the pool.
    var exchanges = 0
    /// Whether the backend's current response allows reusing the connection.
    var responseKeepAlive = true
    /// When it was last put in the pool.
    var idleSince = NIODeadline.uptimeNanoseconds(0)
    /// The route table generation this connection's endpoint was last seen in.
    var generation = 0
    private(set) var isActive = true
    private var readPending = false
    /// The backend closed its side (a read found the end): only that ends a body that runs until the close,
    /// not a reset or a failed write.
    private var inputEnded = false
    /// Whether the backend sent anything in this exchange (an exchange it began answering is not retried
    /// as if the pooled connection had gone stale).
    private(set) var answered = false

    private var reading = Reading.head
    private var requestWasHEAD = false
    /// Set by the exchange when its client takes a chunked body's data without the chunks (HTTP/1.0, HTTP/2).
    var unchunk = false
    private var chunks = ChunkedScanner()
    /// A head that came in more than one read, until its blank line arrives.
    private var partialHead: ByteBuffer?
    /// The fields of the last head, kept so parsing one allocates nothing.
    private var fields: [ResponseHead.Field] = []
    /// After a 101: what the backend sent behind it, kept until the splice takes the connection over.
    private var upgraded: ByteBuffer?

    init(endpoint: Endpoint, pool: BackendPool) {
        self.endpoint = endpoint
        self.pool = pool
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }
    var channel: (any Channel)? { context?.channel }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// A new exchange: `client` is about to write its request.
    func begin(client: ClientHandler, requestWasHEAD: Bool) {
        self.client = client
        self.requestWasHEAD = requestWasHEAD
        exchanges += 1
        answered = false
        responseKeepAlive = true
        reading = .head
        unchunk = false
        partialHead = nil
    }

    func write(_ bytes: ByteBuffer) {
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    func close() {
        guard isActive else { return }
        isActive = false
        context?.close(promise: nil)
    }

    /// Reads resume once the client can take more of the response.
    func resumeReading() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }

    /// The exchange switched protocols: bytes behind the 101 (`early`) and those read before the splice
    /// takes over are kept for it (`takeUpgraded`).
    func holdForSplice(_ early: ByteBuffer) {
        client = nil
        upgraded = early
    }

    func takeUpgraded() -> ByteBuffer? {
        defer { upgraded = nil }
        return upgraded
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if upgraded != nil {
            var more = unwrapInboundIn(data)
            upgraded!.writeBuffer(&more)
            return
        }
        guard let client else {
            // A pooled connection must stay silent; anything else is a broken stream.
            close()
            return
        }
        var buffer = unwrapInboundIn(data)
        answered = true
        consume(&buffer, client: client)
    }

    /// Hands the response in `buffer` to `client`: its head once whole, then its body as it comes,
    /// then its end. Returns as soon as the exchange let go of this connection.
    private func consume(_ buffer: inout ByteBuffer, client: ClientHandler) {
        while true {
            switch reading {
            case .head:
                if var partial = partialHead {
                    // Parsed again only once the blank line can be there (a head sent a byte at a time must not
                    // cost a parse per byte), or at the size limit. Let go first, so the append does not copy.
                    partialHead = nil
                    let searchFrom = max(partial.readableBytes - 3, 0)
                    partial.writeBuffer(&buffer)
                    buffer = partial
                    let blankLine = buffer.readableBytesView.dropFirst(searchFrom).firstRange(of: [13, 10, 13, 10]) != nil
                    guard blankLine || buffer.readableBytes >= ResponseHead.maxLength else {
                        partialHead = buffer
                        return
                    }
                }
                let parsed = buffer.withUnsafeReadableBytes { ResponseHead.parse($0, fields: &fields) }
                switch parsed {
                case .incomplete:
                    if buffer.readableBytes > 0 { partialHead = buffer }
                    return
                case .invalid(let why):
                    responseKeepAlive = false
                    client.backendFailed(self, why: why)
                    return
                case .head(let head):
                    if head.status < 200, head.status != 101 {
                        // An interim response (100, 103): the router sends its own 100 Continue, and drops these.
                        buffer.moveReaderIndex(forwardBy: head.length)
                        continue
                    }
                    let framing = head.framing(requestWasHEAD: requestWasHEAD)
                    responseKeepAlive = head.keepAlive && framing != .untilClose
                    let bodyTaken = client.backendHead(head, bytes: buffer, framing: framing, from: self)
                    // A 101 or a refused head ends the exchange here.
                    guard self.client === client, head.status != 101 else { return }
                    buffer.moveReaderIndex(forwardBy: head.length + bodyTaken)
                    switch framing {
                    case .none: return finish(buffer, client: client)
                    case .length(let length): reading = .length(remaining: length - bodyTaken)
                    case .chunked: reading = .chunked; chunks = ChunkedScanner()
                    case .untilClose: reading = .untilClose
                    }
                }
            case .length(let remaining):
                if remaining == 0 { return finish(buffer, client: client) }
                guard buffer.readableBytes > 0 else { return }
                let take = min(remaining, buffer.readableBytes)
                reading = .length(remaining: remaining - take)
                client.backendBody(buffer.readSlice(length: take)!)
            case .chunked:
                guard buffer.readableBytes > 0 else { return }
                let start = buffer.readerIndex
                let unchunk = self.unchunk
                let consumed: Int
                do {
                    consumed = try buffer.withUnsafeReadableBytes { bytes in
                        try chunks.scan(bytes) { data in
                            if unchunk { client.backendBody(buffer.getSlice(at: start + data.lowerBound, length: data.count)!) }
                        }
                    }
                } catch {
                    // Part of the response is out: the exchange can only end with a close.
                    responseKeepAlive = false
                    client.backendFailed(self, why: "a malformed chunked body")
                    return
                }
                let raw = buffer.readSlice(length: consumed)!
                if !unchunk { client.backendBody(raw) }
                if chunks.isDone { return finish(buffer, client: client) }
            case .untilClose:
                if buffer.readableBytes > 0 { client.backendBody(buffer) }
                return
            }
        }
    }

    /// The response ended: bytes behind it mean the backend is out of step, so its connection is not reused.
    private func finish(_ rest: ByteBuffer, client: ClientHandler) {
        if rest.readableBytes > 0 { responseKeepAlive = false }
        reading = .head
        client.backendEnded(self)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        client?.backendReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        client?.backendWritabilityChanged(writable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        isActive = false
        guard let client else {
            pool.remove(self)
            return
        }
        if case .untilClose = reading, inputEnded {
            // The close is the end of a body without framing.
            responseKeepAlive = false
            reading = .head
            client.backendEnded(self)
        } else {
            self.client = nil
            client.backendClosed(self)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The close that follows reports the failure to the exchange, if any.
        close()
    }

    /// The backend's end of the stream (half-closure is allowed on backend channels, so the end is told
    /// apart from a reset): the connection closes, which ends a body that runs until the close.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            inputEnded = true
            close()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func read(context: ChannelHandlerContext) {
        if let client, !client.isWritable {
            readPending = true
        } else {
            context.read()
        }
    }
}
