import NIOCore

/// Handler in front of the HTTP decoder that tells the client handler when
/// request bytes arrive, so a slow request head times out; and drops them
/// while the connection lingers before its close.
final class ReadObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let client: ClientHandler

    init(client: ClientHandler) {
        self.client = client
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if client.discardsInput { return }
        client.bytesArrived()
        context.fireChannelRead(data)
    }
}
