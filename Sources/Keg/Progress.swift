import Foundation
import Synchronization

/// Counters for a long Keg operation, shared by its worker threads. The
/// operation calls `tick()`; at most ten times a second that calls `report`
/// with the totals so far (the CLI turns it into one progress line).
public final class KegProgress: Sendable {
    public struct Snapshot: Sendable {
        public var files: Int
        public var bytes: UInt64
        public var elapsed: Double
    }

    private let files = Atomic<Int>(0)
    private let bytes = Atomic<UInt64>(0)
    private let lastReport = Atomic<UInt64>(0)
    private let start = DispatchTime.now().uptimeNanoseconds
    private let report: @Sendable (Snapshot) -> Void

    public init(report: @escaping @Sendable (Snapshot) -> Void) {
        self.report = report
    }

    public var snapshot: Snapshot {
        Snapshot(files: files.load(ordering: .relaxed), bytes: bytes.load(ordering: .relaxed),
                 elapsed: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    func add(files f: Int = 0, bytes b: UInt64 = 0) {
        if f != 0 { files.wrappingAdd(f, ordering: .relaxed) }
        if b != 0 { bytes.wrappingAdd(b, ordering: .relaxed) }
        let now = DispatchTime.now().uptimeNanoseconds
        let last = lastReport.load(ordering: .relaxed)
        if now > max(last, start) + 100_000_000,
           lastReport.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged {
            report(snapshot)
        }
    }
}
