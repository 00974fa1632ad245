import NIOCore
import NIOPosix

/// The backend connections of one event loop: an idle stack per endpoint, plus
/// the per-loop state of endpoint choice (round-robin counters, backoff after
/// a failed connect, the id generator), and the loop's client handlers, whose
/// timeouts one timer checks (one per loop, not one per connection).
///
/// Everything here runs on `eventLoop` only: client handlers of that loop use
/// it without locks. It is `Sendable` solely so the service can hand each loop
/// its pool; that is sound because every access after creation happens on the loop.
final class BackendPool: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let configuration: RouterConfiguration
    private var idle: [Endpoint: [BackendConnection]] = [:]
    private var counters: [String: Int] = [:]
    private var backoff: [Endpoint: NIODeadline] = [:]
    private var sweeper: RepeatedTask?
    private var clock: RepeatedTask?
    /// The client handlers on this loop; each knows its index here (`clockIndex`).
    private var clients: [ClientHandler] = []
    private var isShutDown = false
    var random = FastRandom()

    init(eventLoop: any EventLoop, configuration: RouterConfiguration) {
        self.eventLoop = eventLoop
        self.configuration = configuration
    }

    func start(tickPeriod: TimeAmount) {
        let period = TimeAmount.nanoseconds(max(configuration.backendIdleTimeout.nanoseconds / 4, 50_000_000))
        sweeper = eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { [self] _ in
            self.sweep()
        }
        clock = eventLoop.scheduleRepeatedTask(initialDelay: tickPeriod, delay: tickPeriod) { [self] _ in
            // A tick may close a connection, which leaves `clients`: the loop walks the array as it was.
            for client in self.clients { client.tick() }
        }
    }

    // MARK: Client timeouts

    func track(_ client: ClientHandler) {
        guard client.clockIndex == nil else { return }
        client.clockIndex = clients.count
        clients.append(client)
    }

    func untrack(_ client: ClientHandler) {
        guard let index = client.clockIndex else { return }
        client.clockIndex = nil
        guard index < clients.count, clients[index] === client else { return }
        let last = clients.removeLast()
        if last !== client {
            clients[index] = last
            last.clockIndex = index
        }
    }

    // MARK: Choosing an endpoint

    /// The index to try first for `app`: round-robin, passing over endpoints in backoff.
    func firstIndex(app: String, count: Int) -> Int {
        let counter = counters[app, default: 0]
        counters[app] = counter &+ 1
        return counter % count
    }

    func isBackingOff(_ endpoint: Endpoint, now: NIODeadline) -> Bool {
        guard !backoff.isEmpty, let until = backoff[endpoint] else { return false }
        if until > now { return true }
        backoff[endpoint] = nil
        return false
    }

    func connectFailed(_ endpoint: Endpoint) {
        backoff[endpoint] = .now() + configuration.endpointBackoff
    }

    // MARK: Connections

    /// A pooled connection to `endpoint`, most recently used first.
    func takeIdle(_ endpoint: Endpoint) -> BackendConnection? {
        guard !idle.isEmpty else { return nil }
        while let connection = idle[endpoint]?.popLast() {
            if connection.isActive { return connection }
        }
        return nil
    }

    func connect(_ endpoint: Endpoint) -> EventLoopFuture<BackendConnection> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            // The backend's end of the stream arrives as an event: a body that runs until the close is whole only then.
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { [unowned self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(BackendConnection(endpoint: endpoint, pool: self))
                }
            }
        let channel: EventLoopFuture<any Channel>
        if let address = try? SocketAddress(ipAddress: endpoint.host, port: endpoint.port) {
            channel = bootstrap.connect(to: address)
        } else {
            channel = bootstrap.connect(host: endpoint.host, port: endpoint.port)
        }
        return channel.assumeIsolated().flatMapThrowing { channel in
            try channel.pipeline.syncOperations.handler(type: BackendConnection.self)
        }.nonisolated()
    }

    /// Puts a connection whose exchange ended back in the pool, or closes it
    /// when it cannot be reused, its endpoint left the table, or the pool is full.
    func release(_ connection: BackendConnection, reusable: Bool, snapshot: Snapshot) {
        connection.client = nil
        guard reusable, connection.isActive, !isShutDown else {
            connection.close()
            return
        }
        if connection.generation != snapshot.generation {
            guard snapshot.endpoints.contains(connection.endpoint) else {
                connection.close()
                return
            }
            connection.generation = snapshot.generation
        }
        connection.idleSince = .now()
        var stack = idle.removeValue(forKey: connection.endpoint) ?? []
        if stack.count >= configuration.maxIdleConnectionsPerEndpoint {
            stack.removeFirst().close()
        }
        stack.append(connection)
        idle[connection.endpoint] = stack
    }

    /// Forgets a pooled connection the backend closed.
    func remove(_ connection: BackendConnection) {
        guard var stack = idle[connection.endpoint], let index = stack.firstIndex(where: { $0 === connection }) else {
            return
        }
        stack.remove(at: index)
        idle[connection.endpoint] = stack.isEmpty ? nil : stack
    }

    /// Closes the idle connections of endpoints that left the table.
    func prune(keeping snapshot: Snapshot) {
        for (endpoint, stack) in idle where !snapshot.endpoints.contains(endpoint) {
            idle[endpoint] = nil
            for connection in stack { connection.close() }
        }
        backoff = backoff.filter { snapshot.endpoints.contains($0.key) }
        counters = counters.filter { snapshot.apps[$0.key] != nil }
    }

    private func sweep() {
        let oldest = NIODeadline.now() - configuration.backendIdleTimeout
        for (endpoint, stack) in idle {
            let expired = stack.prefix { $0.idleSince < oldest }
            guard !expired.isEmpty else { continue }
            let kept = Array(stack.dropFirst(expired.count))
            idle[endpoint] = kept.isEmpty ? nil : kept
            for connection in expired { connection.close() }
        }
    }

    func shutdown() {
        isShutDown = true
        sweeper?.cancel()
        sweeper = nil
        clock?.cancel()
        clock = nil
        for client in clients { client.clockIndex = nil }
        clients = []
        let stacks = idle.values
        idle = [:]
        for connection in stacks.joined() { connection.close() }
    }
}
