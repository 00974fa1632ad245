import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP2
import NIOSSL
import NIOTLS

/// The router's HTTPS listener: TLS with SNI over the apps' certificates, HTTP/2 or HTTP/1.1 by ALPN.
public struct HTTPSListener: Sendable {
    public var host: String
    public var port: Int
    /// A certificate the TLS library needs to start with; never sent (a handshake naming no host the
    /// table has a certificate for is refused).
    public var placeholder: ServedCertificate
    public var onBound: @Sendable (Int) -> Void

    public init(host: String, port: Int, placeholder: ServedCertificate, onBound: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.host = host
        self.port = port
        self.placeholder = placeholder
        self.onBound = onBound
    }
}

/// Behind the TLS handler of an HTTPS connection: the handshake (and ALPN) must be done within the header
/// timeout, and an HTTP/2 connection without an open stream is closed after the client idle timeout
/// (an HTTP/1.1 one has its `ClientHandler` for that; HTTP/2's are per stream).
final class TLSConnectionGuard: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let streams = StreamCount()
    private let shared: SharedState
    private let started = NIODeadline.now()
    private var handshakeDone = false
    private var ticker: RepeatedTask?

    init(shared: SharedState) {
        self.shared = shared
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let period = shared.tickPeriod
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let channel = context.channel
        ticker = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
            handler.value.tick(channel)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        ticker?.cancel()
        ticker = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        ticker?.cancel()
        ticker = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls { handshakeDone = true }
        context.fireUserInboundEventTriggered(event)
    }

    private func tick(_ channel: any Channel) {
        let now = NIODeadline.now()
        if !handshakeDone {
            if now - started > shared.configuration.headerReadTimeout { channel.close(promise: nil) }
        } else if streams.idle(longerThan: shared.configuration.clientIdleTimeout, now: now) {
            channel.close(promise: nil)
        }
    }
}

/// The open streams of an HTTP/2 connection, and since when it has had none.
final class StreamCount: NIOHTTP2StreamDelegate {
    private let state = NIOLockedValueBox((http2: false, open: 0, idleSince: NIODeadline.now()))

    func becameHTTP2() { state.withLockedValue { $0.http2 = true } }

    func streamCreated(_ id: HTTP2StreamID, channel: any Channel) {
        state.withLockedValue { $0.open += 1 }
    }

    func streamClosed(_ id: HTTP2StreamID, channel: any Channel) {
        state.withLockedValue { state in
            state.open -= 1
            if state.open == 0 { state.idleSince = .now() }
        }
    }

    func idle(longerThan timeout: TimeAmount, now: NIODeadline) -> Bool {
        state.withLockedValue { $0.http2 && $0.open == 0 && now - $0.idleSince > timeout }
    }
}
