public import Logging
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import NIOHTTP2
public import ServiceLifecycle

/// The proxy as a ServiceLifecycle `Service`: listens on `host:port` and sends
/// each request to a healthy web process of the app its Host header names.
///
/// `run()` returns after graceful shutdown: the listener closes first, then
/// idle client connections close and busy ones close after their response,
/// for at most `configuration.shutdownGracePeriod`.
public final class RouterService: Service {
    private let host: String
    private let port: Int
    private let shared: SharedState
    private let onBound: @Sendable (Int) -> Void
    private let https: HTTPSListener?

    public init(
        host: String,
        port: Int,
        table: RouteTable,
        logger: Logger,
        configuration: RouterConfiguration = RouterConfiguration(),
        https: HTTPSListener? = nil,
        onBound: @escaping @Sendable (Int) -> Void = { _ in },
        onServed: @escaping @Sendable (ServedRequest) -> Void = { _ in }
    ) {
        self.host = host
        self.port = port
        self.onBound = onBound
        self.https = https
        self.shared = SharedState(table: table, configuration: configuration, logger: logger, onServed: onServed)
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, shared.configuration.eventLoops))
        var poolsByLoop: [ObjectIdentifier: BackendPool] = [:]
        for eventLoop in group.makeIterator() {
            let pool = BackendPool(eventLoop: eventLoop, configuration: shared.configuration)
            poolsByLoop[ObjectIdentifier(eventLoop)] = pool
            eventLoop.execute { [tickPeriod = shared.tickPeriod] in pool.start(tickPeriod: tickPeriod) }
        }
        let pools = poolsByLoop
        let connections = ConnectionRegistry()
        let clients = ClientCounts(limit: shared.configuration.maxConnectionsPerClient)
        var servers: [any Channel] = []
        var boundPort = port
        var boundHTTPSPort: Int?
        do {
            let plain = makeBootstrap(pools: pools, connections: connections, clients: clients, tls: nil)
            boundPort = try await Self.bindOnEveryLoop(group, host: host, port: port, into: &servers, plain)
            if let https {
                let tls = try tlsContext(https)
                let secure = makeBootstrap(pools: pools, connections: connections, clients: clients, tls: tls)
                boundHTTPSPort = try await Self.bindOnEveryLoop(group, host: https.host, port: https.port, into: &servers, secure)
            }
        } catch {
            for server in servers { try? await server.close() }
            try await group.shutdownGracefully()
            throw error
        }
        let listeners = servers
        shared.logger.info("router listening", metadata: ["address": "\(host):\(boundPort)"])
        if let https, let bound = boundHTTPSPort {
            shared.boundHTTPSPort.withLockedValue { $0 = bound }
            https.onBound(bound)
        }
        let observer = shared.table.addObserver { snapshot in
            for pool in pools.values { pool.eventLoop.execute { pool.prune(keeping: snapshot) } }
        }
        onBound(boundPort)

        await withTaskCancellationOrGracefulShutdownHandler {
            for server in listeners { try? await server.closeFuture.get() }
        } onCancelOrGracefulShutdown: {
            for server in listeners { server.close(promise: nil) }
        }
        shared.table.removeObserver(observer)
        shared.logger.info("router draining connections", metadata: ["count": "\(connections.count)"])
        await connections.drain(
            grace: Task.isCancelled ? .zero : shared.configuration.shutdownGracePeriod, on: group.next())
        for pool in pools.values {
            try? await pool.eventLoop.submit { pool.shutdown() }.get()
        }
        try await group.shutdownGracefully()
        shared.logger.info("router stopped")
    }

    /// TLS for the HTTPS listener: each handshake gets the certificate the current table has for its
    /// SNI name; one without a name, or naming a host the table has none for, is refused.
    private func tlsContext(_ https: HTTPSListener) throws -> NIOSSLContext {
        let table = shared.table
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: https.placeholder.chain.map { .certificate($0) }, privateKey: .privateKey(https.placeholder.key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["h2", "http/1.1"]
        configuration.sslContextCallback = { values, promise in
            guard let name = values.serverHostname, let certificate = table.snapshot().certificate(for: name) else {
                promise.fail(TLSRefusal(name: values.serverHostname))
                return
            }
            promise.succeed(certificate.override)
        }
        return try NIOSSLContext(configuration: configuration)
    }

    /// One listening socket per event loop on the same port (SO_REUSEPORT), so the kernel spreads new
    /// connections over the loops and each is accepted on the loop that serves it: no hand-over between
    /// threads per connection, as nginx's workers each accept their own. A port some other process
    /// listens on is refused first (SO_REUSEPORT alone would share it with another router of the same
    /// user; one binding the port in the instant between the check and the listeners still could).
    /// Returns the port bound (the one asked for, or the one port 0 got).
    private static func bindOnEveryLoop(
        _ group: MultiThreadedEventLoopGroup, host: String, port: Int, into servers: inout [any Channel],
        _ bootstrap: @escaping (any EventLoop) -> ServerBootstrap
    ) async throws -> Int {
        let loops = Array(group.makeIterator())
        if port != 0 { try refuseIfListened(host: host, port: port) }
        var bound = port
        for loop in loops {
            let server = try await bootstrap(loop).serverChannelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
                .bind(host: host, port: bound).get()
            servers.append(server)
            bound = server.localAddress?.port ?? bound
        }
        return bound
    }

    /// Binds (without listening) a socket without SO_REUSEPORT to `host:port`: the bind fails when another
    /// socket listens there.
    private static func refuseIfListened(host: String, port: Int) throws {
        let address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        let fd = socket(Int32(address.protocol.rawValue), Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = address.withSockAddr { pointer, size in bind(fd, pointer, socklen_t(size)) }
        guard bound == 0 else { throw IOError(errnoCode: errno, reason: "bind(\(host):\(port))") }
    }

    private func makeBootstrap(
        pools: [ObjectIdentifier: BackendPool], connections: ConnectionRegistry, clients: ClientCounts, tls: NIOSSLContext?
    ) -> (any EventLoop) -> ServerBootstrap {
        let shared = self.shared
        let limits = {
            var limits = NIOHTTPDecoderLimitConfiguration()
            limits.maxHeaderListSize = shared.configuration.maxHeaderBytes
            limits.maxHeaderFieldSize = shared.configuration.maxHeaderBytes
            limits.maxHeaderFieldCount = shared.configuration.maxHeaderFields
            return limits
        }()
        return { loop in ServerBootstrap(group: loop)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // No child options: accepted sockets inherit TCP_NODELAY from the listener (NIO sets it there), and
            // four reads per wakeup is NIO's default; options set per connection cost a system call each.
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let pool = pools[ObjectIdentifier(channel.eventLoop)] else {
                        preconditionFailure("no backend pool for the channel's event loop")
                    }
                    let address = channel.remoteAddress?.ipAddress ?? ""
                    let admitted = clients.admit(address)
                    channel.closeFuture.whenComplete { _ in clients.release(address) }
                    connections.add(channel)
                    let sync = channel.pipeline.syncOperations
                    guard let tls else {
                        try Self.addHTTP1(to: channel, client: ClientHandler(shared: shared, pool: pool, overLimit: !admitted), limits: limits)
                        return
                    }
                    // Over its limit, an address's next TLS connection is closed before any handshake (no HTTP yet to say 429).
                    guard admitted else {
                        channel.close(promise: nil)
                        return
                    }
                    let guardian = TLSConnectionGuard(shared: shared)
                    let streams = guardian.streams
                    try sync.addHandler(NIOSSLServerHandler(context: tls))
                    try sync.addHandler(guardian)
                    try sync.addHandler(ApplicationProtocolNegotiationHandler { result, channel in
                        channel.eventLoop.makeCompletedFuture {
                            switch result {
                            case .negotiated("h2"):
                                streams.becameHTTP2()
                                // Each stream is a request, seen as HTTP/1 by its codec and sent to backends as HTTP/1.1.
                                _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                                    mode: .server, connectionConfiguration: .init(), streamConfiguration: .init(), streamDelegate: streams
                                ) { stream in
                                    stream.eventLoop.makeCompletedFuture {
                                        let sync = stream.pipeline.syncOperations
                                        try sync.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                                        try sync.addHandler(
                                            ClientHandler(shared: shared, pool: pool, scheme: "https", output: .http2Stream, overLimit: !admitted))
                                    }
                                }
                            default:
                                try Self.addHTTP1(
                                    to: channel, client: ClientHandler(shared: shared, pool: pool, scheme: "https", overLimit: !admitted),
                                    limits: limits)
                            }
                        }
                    })
                }
            }
        }
    }
}

extension RouterService {
    /// The HTTP/1.1 handlers of a client connection: NIO's request decoder, then the client handler,
    /// which writes responses as bytes (no response encoder). Parse errors reach the client handler,
    /// which answers 431 or 400 with a request id.
    static func addHTTP1(to channel: any Channel, client: ClientHandler, limits: NIOHTTPDecoderLimitConfiguration) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(ReadObserver(client: client))
        try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: limits)))
        try sync.addHandler(client)
    }
}

/// A TLS handshake the router refuses: it named no host, or one no app has a certificate for.
struct TLSRefusal: Error, CustomStringConvertible {
    let name: String?
    var description: String { name.map { "no certificate for \($0)" } ?? "the client named no host (SNI)" }
}

/// What every connection of one service shares; immutable.
final class SharedState: Sendable {
    let table: RouteTable
    let configuration: RouterConfiguration
    let logger: Logger
    let onServed: @Sendable (ServedRequest) -> Void
    /// How often each connection checks its timeouts: a quarter of the shortest one.
    let tickPeriod: TimeAmount
    /// The HTTPS listener's port once bound (where an app that takes HTTPS only is redirected).
    let boundHTTPSPort = NIOLockedValueBox<Int?>(nil)
    var httpsPort: Int? { boundHTTPSPort.withLockedValue { $0 } }

    init(
        table: RouteTable, configuration: RouterConfiguration, logger: Logger,
        onServed: @escaping @Sendable (ServedRequest) -> Void
    ) {
        self.table = table
        self.configuration = configuration
        self.logger = logger
        self.onServed = onServed
        // An app's own request timeout is whole seconds: a tick a second at most keeps it to the second.
        let shortest = min(
            configuration.requestTimeout, configuration.clientIdleTimeout, configuration.headerReadTimeout, .seconds(4))
        self.tickPeriod = .nanoseconds(max(shortest.nanoseconds / 4, 10_000_000))
    }
}

/// The open client connections, so shutdown can drain them.
final class ConnectionRegistry: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    var count: Int { channels.withLockedValue { $0.count } }

    func add(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        channels.withLockedValue { $0[key] = channel }
        channel.closeFuture.whenComplete { _ in
            _ = self.channels.withLockedValue { $0.removeValue(forKey: key) }
        }
    }

    /// Asks every connection to close after its current response, then closes
    /// the ones still open after `grace`.
    func drain(grace: TimeAmount, on eventLoop: any EventLoop) async {
        let open = channels.withLockedValue { Array($0.values) }
        guard !open.isEmpty else { return }
        for channel in open {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = eventLoop.scheduleTask(in: grace) {
            for channel in open { channel.close(promise: nil) }
        }
        let closed = open.map(\.closeFuture)
        try? await EventLoopFuture.andAllComplete(closed, on: eventLoop).get()
        deadline.cancel()
    }
}

/// Open connections per client address, across event loops (nginx `limit_conn`).
final class ClientCounts: Sendable {
    private let limit: Int
    private let counts = NIOLockedValueBox<[String: Int]>([:])

    init(limit: Int) {
        self.limit = limit
    }

    /// Counts a new connection from `address`; false when the address already holds `limit`
    /// (the connection is still counted until it closes, as it is answered before closing).
    func admit(_ address: String) -> Bool {
        counts.withLockedValue { counts in
            let count = counts[address, default: 0] + 1
            counts[address] = count
            return count <= limit
        }
    }

    func release(_ address: String) {
        counts.withLockedValue { counts in
            let count = counts[address, default: 1] - 1
            counts[address] = count > 0 ? count : nil
        }
    }
}
