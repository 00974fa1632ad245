public import NIOCore
import NIOHTTPTypes
import Synchronization
import Foundation

/// What keeps idle and slow clients from holding the API server: every
/// connection must finish a request head within `headerTimeout` of being
/// opened or of its last response (slowloris, a connection that says
/// nothing), a request that stops sending parts for `idleTimeout` is closed,
/// and at most `maxConnections` are open at once (a connection over the cap
/// is closed at once, so the file descriptors left serve the others).
public struct ConnectionLimits: Sendable {
    public var headerTimeout: TimeAmount
    public var idleTimeout: TimeAmount
    public var maxConnections: Int

    public init(headerTimeout: TimeAmount = .seconds(15), idleTimeout: TimeAmount = .seconds(60), maxConnections: Int = ConnectionLimits.defaultMaxConnections) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
    }

    /// Half the file descriptors this process may open (after `raiseFileLimit`), at most 8,192.
    public static var defaultMaxConnections: Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 512 }
        return max(64, min(8192, Int(limit.rlim_cur) / 2))
    }

    /// Raises the soft limit on open files to the hard one (as nginx's
    /// worker_rlimit_nofile does): the default soft limit of 1,024 is far
    /// below what a server with many clients and app processes needs.
    public static func raiseFileLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// The connection count every connection's `ConnectionGuard` shares.
    final class Count: Sendable {
        let open = Atomic<Int>(0)
    }
}

/// One connection's guard (see `ConnectionLimits`), in the pipeline after
/// HTTP decoding: it sees request parts in and response parts out.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let limits: ConnectionLimits
    let count: ConnectionLimits.Count
    var counted = false
    var headDeadline: Scheduled<Void>?
    var inFlight = 0

    init(limits: ConnectionLimits, count: ConnectionLimits.Count) {
        self.limits = limits
        self.count = count
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let open = count.open.add(1, ordering: .relaxed).newValue
        counted = true
        if open > limits.maxConnections {
            context.close(promise: nil)
            return
        }
        armHeadDeadline(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        headDeadline?.cancel()
        if counted {
            count.open.subtract(1, ordering: .relaxed)
            counted = false
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) {
            inFlight += 1
            headDeadline?.cancel()
            headDeadline = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            inFlight -= 1
            if inFlight == 0 { armHeadDeadline(context) }
        }
        context.write(data, promise: promise)
    }

    /// The next request's head must be complete by then.
    func armHeadDeadline(_ context: ChannelHandlerContext) {
        headDeadline?.cancel()
        let channel = context.channel
        headDeadline = context.eventLoop.scheduleTask(in: limits.headerTimeout) { channel.close(promise: nil) }
    }
}
