public import Logging
public import ServiceLifecycle

/// A service run under supervision, as a supervisor tree restarts a child:
/// when it throws (or returns while the system is not shutting down), the
/// failure is reported and the service is started again after a backoff
/// (1 s, doubling to 30 s; back to 1 s once it has run for a minute), while
/// the rest of the system goes on serving. Only cancellation or a graceful
/// shutdown ends it. So a lost build claim, a malformed record or a bug in
/// one part never stops the API, the router or the node agent.
public struct Supervised<Inner: Service>: Service, CustomStringConvertible {
    public let name: String
    public let service: Inner
    let logger: Logger
    /// Where failures go; the logger (at error level) without one.
    let report: (@Sendable (String) -> Void)?
    let backoff: (first: Duration, limit: Duration, healthy: Duration)

    public init(_ name: String, _ service: Inner, logger: Logger, report: (@Sendable (String) -> Void)? = nil,
                backoff: (first: Duration, limit: Duration, healthy: Duration) = (.seconds(1), .seconds(30), .seconds(60))) {
        self.name = name
        self.service = service
        self.logger = logger
        self.report = report
        self.backoff = backoff
    }

    public var description: String { name }

    public func run() async throws {
        var delay = backoff.first
        var restarts = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let started = ContinuousClock.now
            let failure: String
            do {
                try await service.run()
                if Task.isCancelled || Task.isShuttingDownGracefully { return }
                failure = "stopped on its own"
            } catch is CancellationError where Task.isCancelled || Task.isShuttingDownGracefully {
                return
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { return }
                failure = "failed: \(error)"
            }
            if ContinuousClock.now - started >= backoff.healthy { delay = backoff.first }
            restarts += 1
            let message = "\(name) \(failure); restarting in \(delay) (restart \(restarts))"
            if let report { report(message) } else { logger.error("\(message)") }
            do {
                let pause = delay
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
            } catch {
                return
            }
            delay = min(delay * 2, backoff.limit)
        }
    }
}
