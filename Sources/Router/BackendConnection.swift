import NIOCore
import NIOHTTP1

/// One keep-alive HTTP/1.1 connection to an endpoint: the last handler of its
/// channel. While an exchange uses it, `client` is set and every response part
/// goes straight to that client handler, on the same event loop; while pooled,
/// `client` is nil and anything the backend sends (or its close) retires it.
final class BackendConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

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

    func write(_ part: HTTPClientRequestPart) {
        context?.write(wrapOutboundOut(part), promise: nil)
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

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let client else {
            // A pooled connection must stay silent; anything else is a broken stream.
            close()
            return
        }
        client.backendRead(unwrapInboundIn(data), from: self)
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
        if let client {
            self.client = nil
            client.backendClosed(self)
        } else {
            pool.remove(self)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The close that follows reports the failure to the exchange, if any.
        close()
    }

    func read(context: ChannelHandlerContext) {
        if let client, !client.isWritable {
            readPending = true
        } else {
            context.read()
        }
    }
}
