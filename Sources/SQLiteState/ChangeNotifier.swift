import Synchronization

/// Wakes the watchers of one store when it commits a change. A waiter also
/// wakes after a timeout, which is how changes from other processes are seen.
/// Each notification moves a generation on: a watcher that read the
/// generation before it looked for changes and waits "after" it is woken at
/// once by a change that came between its look and its wait, rather than
/// sleeping out the timeout (the lost wakeup a bare condition would have).
final class ChangeNotifier: Sendable {
    private struct Waiters {
        var next = 0
        var generation: UInt64 = 0
        var continuations: [Int: CheckedContinuation<Void, Never>] = [:]
    }
    private let waiters = Mutex(Waiters())

    /// How many notifications there have been.
    var generation: UInt64 { waiters.withLock { $0.generation } }

    func notifyAll() {
        let all = waiters.withLock { w -> [CheckedContinuation<Void, Never>] in
            w.generation &+= 1
            defer { w.continuations = [:] }
            return Array(w.continuations.values)
        }
        for c in all { c.resume() }
    }

    /// Returns on the next notification after `generation` (at once if there was one already),
    /// after `timeout`, or on cancellation.
    func wait(after generation: UInt64? = nil, atMost timeout: Duration) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await Task.sleep(for: timeout) }
            group.addTask { await self.nextNotification(after: generation) }
            try await group.next()
            group.cancelAll()
        }
    }

    private func nextNotification(after generation: UInt64?) async {
        let id = waiters.withLock { w -> Int in
            w.next += 1
            return w.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let cancelled = waiters.withLock { w -> Bool in
                    if Task.isCancelled { return true }
                    if let generation, w.generation != generation { return true }  // one came since the caller looked
                    w.continuations[id] = c
                    return false
                }
                if cancelled { c.resume() }
            }
        } onCancel: {
            let c = waiters.withLock { $0.continuations.removeValue(forKey: id) }
            c?.resume()
        }
    }
}
