import Synchronization

/// Wakes the watchers of one store when it commits a change. A waiter also
/// wakes after a timeout, which is how changes from other processes are seen.
final class ChangeNotifier: Sendable {
    private struct Waiters {
        var next = 0
        var continuations: [Int: CheckedContinuation<Void, Never>] = [:]
    }
    private let waiters = Mutex(Waiters())

    func notifyAll() {
        let all = waiters.withLock { w -> [CheckedContinuation<Void, Never>] in
            defer { w.continuations = [:] }
            return Array(w.continuations.values)
        }
        for c in all { c.resume() }
    }

    /// Returns on the next notification, after `timeout`, or on cancellation.
    func wait(atMost timeout: Duration) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await Task.sleep(for: timeout) }
            group.addTask { await self.nextNotification() }
            try await group.next()
            group.cancelAll()
        }
    }

    private func nextNotification() async {
        let id = waiters.withLock { w -> Int in
            w.next += 1
            return w.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let cancelled = waiters.withLock { w -> Bool in
                    if Task.isCancelled { return true }
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
