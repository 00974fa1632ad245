import Foundation
import KbuildSystem
import Logging
import ServiceLifecycle
import Synchronization
import XCTest

/// A part of kbuild that fails is reported and restarted with backoff while
/// the others go on; only a shutdown ends it.
final class SupervisedTests: XCTestCase {
    /// Fails `failures` times, then runs until cancelled; counts its starts.
    struct Flaky: Service {
        let starts: Starts
        let failures: Int
        final class Starts: Sendable { let count = Mutex(0) }
        struct Broken: Error, CustomStringConvertible { var description: String { "the part broke" } }

        func run() async throws {
            let n = starts.count.withLock { $0 += 1; return $0 }
            if n <= failures { throw Broken() }
            try await gracefulShutdown()
        }
    }

    /// Counts ticks until it is shut down: the part that must keep serving.
    struct Steady: Service {
        let ticks: Flaky.Starts
        func run() async throws {
            try? await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    ticks.count.withLock { $0 += 1 }
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
        }
    }

    func testAFailingPartIsRestartedAndTheOthersServe() async throws {
        let logger = Logger(label: "test")
        let reports = Flaky.Starts()
        let messages = Mutex<[String]>([])
        let flaky = Flaky(starts: Flaky.Starts(), failures: 3)
        let steady = Steady(ticks: Flaky.Starts())
        let supervised = Supervised("flaky part", flaky, logger: logger, report: { message in
            reports.count.withLock { $0 += 1 }
            messages.withLock { $0.append(message) }
        }, backoff: (first: .milliseconds(20), limit: .milliseconds(80), healthy: .seconds(60)))
        let group = ServiceGroup(configuration: .init(services: [.init(service: supervised), .init(service: steady)], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            // Three failures, each reported and followed by a restart after 20, 40, 80 ms.
            let deadline = ContinuousClock.now + .seconds(5)
            while flaky.starts.count.withLock({ $0 }) < 4 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            XCTAssertEqual(flaky.starts.count.withLock { $0 }, 4, "started again after each of three failures")
            XCTAssertEqual(reports.count.withLock { $0 }, 3)
            XCTAssertTrue(messages.withLock { $0 }.first?.contains("flaky part failed: the part broke; restarting in") ?? false,
                          "\(messages.withLock { $0 })")
            let before = steady.ticks.count.withLock { $0 }
            try await Task.sleep(for: .milliseconds(100))
            XCTAssertGreaterThan(steady.ticks.count.withLock { $0 }, before, "the other part kept running all along")
            // A graceful shutdown ends both, with no restart.
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        XCTAssertEqual(flaky.starts.count.withLock { $0 }, 4, "no restart after the shutdown")
    }
}
