import Logging
import NIOConcurrencyHelpers
import NIOCore
import Router
import ServiceLifecycle
import XCTest

/// A RouterService on a free port of 127.0.0.1, run in its own ServiceGroup.
final class RunningRouter: @unchecked Sendable {
    let port: Int
    let group: ServiceGroup
    let task: Task<Void, any Error>
    private let servedLog: NIOLockedValueBox<[ServedRequest]>

    var served: [ServedRequest] { servedLog.withLockedValue { $0 } }

    /// The reports once there are `count` of them (onServed runs just after the
    /// response's last write, so a client may see the response first).
    func served(count: Int) async throws -> [ServedRequest] {
        for _ in 0..<200 {
            let served = self.served
            if served.count >= count { return served }
            try await Task.sleep(for: .milliseconds(10))
        }
        return served
    }

    /// The HTTPS listener's port, when started with `https`.
    private(set) var httpsPort = 0

    static func start(table: RouteTable, configuration: RouterConfiguration = RouterConfiguration(), https: Bool = false) async throws
        -> RunningRouter
    {
        var logger = Logger(label: "router-test")
        logger.logLevel = .warning
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        let servedLog = NIOLockedValueBox<[ServedRequest]>([])
        var configuration = configuration
        configuration.eventLoops = 2
        let (httpsPorts, httpsSink) = AsyncStream.makeStream(of: Int.self)
        let listener = https ? HTTPSListener(
            host: "127.0.0.1", port: 0, placeholder: try TestCertificate(names: ["placeholder.invalid"]).served,
            onBound: { httpsSink.yield($0) }) : nil
        let router = RouterService(
            host: "127.0.0.1", port: 0, table: table, logger: logger, configuration: configuration, https: listener,
            onBound: { portSink.yield($0) },
            onServed: { request in servedLog.withLockedValue { $0.append(request) } })
        let group = ServiceGroup(services: [router], logger: logger)
        let task = Task { try await group.run() }
        let port = try await withTimeout(seconds: 10, "router to bind") {
            for await port in ports { return port }
            throw TestError("router stopped before binding")
        }
        let running = RunningRouter(port: port, group: group, task: task, servedLog: servedLog)
        if https {
            running.httpsPort = try await withTimeout(seconds: 10, "router to bind https") {
                for await port in httpsPorts { return port }
                throw TestError("router stopped before binding https")
            }
        }
        return running
    }

    private init(port: Int, group: ServiceGroup, task: Task<Void, any Error>, servedLog: NIOLockedValueBox<[ServedRequest]>) {
        self.port = port
        self.group = group
        self.task = task
        self.servedLog = servedLog
    }

    /// Graceful shutdown; fails when the service does not return within `seconds`.
    func stop(seconds: Double = 15) async throws {
        await group.triggerGracefulShutdown()
        let task = self.task
        try await withTimeout(seconds: seconds, "router to shut down") { try await task.value }
    }
}

func withTimeout<T: Sendable>(
    seconds: Double, _ what: String, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            throw TestError("timed out after \(seconds) s waiting for \(what)")
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// Runs blocking socket code off the cooperative pool.
func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}
