import NIOConcurrencyHelpers
import NIOCore

/// Request counts and latencies per app, for `/metrics` (Prometheus text) and the dashboard.
///
/// `record` runs on the router's event loops for each response: a lock and a few
/// array increments. Totals are counters since the start (Prometheus takes rates
/// of them); percentiles are read from the last `window` minutes, kept as one
/// histogram per minute in a ring.
public final class RouterMetrics: Sendable {
    /// Latency bucket bounds in milliseconds (upper, inclusive); past the last is +Inf.
    public static let bounds: [Double] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000]
    /// Minutes the percentiles cover.
    public static let window = 5

    struct Histogram: Sendable {
        var buckets = [UInt64](repeating: 0, count: RouterMetrics.bounds.count + 1)
        var count: UInt64 = 0
        var sum: Double = 0

        mutating func add(milliseconds: Double) {
            var index = 0
            while index < RouterMetrics.bounds.count, milliseconds > RouterMetrics.bounds[index] { index += 1 }
            buckets[index] += 1
            count += 1
            sum += milliseconds
        }

        mutating func merge(_ other: Histogram) {
            for index in buckets.indices { buckets[index] += other.buckets[index] }
            count += other.count
            sum += other.sum
        }

        /// The `q` quantile, interpolated within its bucket (the last bucket answers its lower bound).
        func quantile(_ q: Double) -> Double? {
            guard count > 0 else { return nil }
            let rank = q * Double(count)
            var seen: UInt64 = 0
            for (index, n) in buckets.enumerated() where n > 0 {
                if Double(seen + n) >= rank {
                    let lower = index == 0 ? 0 : RouterMetrics.bounds[index - 1]
                    guard index < RouterMetrics.bounds.count else { return lower }
                    let upper = RouterMetrics.bounds[index]
                    return lower + (upper - lower) * max(0, rank - Double(seen)) / Double(n)
                }
                seen += n
            }
            return RouterMetrics.bounds.last
        }
    }

    struct App: Sendable {
        /// Responses by status class: index 1 for 1xx … 5 for 5xx (0: other).
        var byClass = [UInt64](repeating: 0, count: 6)
        var latency = Histogram()
        var bytes: UInt64 = 0
        /// Per-minute histograms, `minutes[m % window]` holding minute `m` when `minuteOf[...] == m`.
        var minutes = [Histogram](repeating: Histogram(), count: RouterMetrics.window)
        var minuteOf = [Int64](repeating: -1, count: RouterMetrics.window)
        var classMinutes = [[UInt64]](repeating: [UInt64](repeating: 0, count: 6), count: RouterMetrics.window)
    }

    struct State: Sendable {
        var apps: [String: App] = [:]
        var logDropped: UInt64 = 0
    }

    private let state = NIOLockedValueBox(State())
    private let clock: @Sendable () -> Int64

    /// `clock`: whole seconds (uptime when nil); tests move it.
    public init(clock: (@Sendable () -> Int64)? = nil) {
        self.clock = clock ?? { Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000_000) }
    }

    public func record(_ served: ServedRequest) {
        guard let app = served.app else { return }
        let milliseconds = Double(served.duration.components.seconds) * 1000 + Double(served.duration.components.attoseconds) / 1e15
        let statusClass = (100...599).contains(served.status) ? served.status / 100 : 0
        let minute = clock() / 60
        state.withLockedValue { state in
            var entry = state.apps.removeValue(forKey: app) ?? App()
            entry.byClass[statusClass] += 1
            entry.latency.add(milliseconds: milliseconds)
            entry.bytes += UInt64(max(0, served.bytes))
            let slot = Int(minute % Int64(RouterMetrics.window))
            if entry.minuteOf[slot] != minute {
                entry.minuteOf[slot] = minute
                entry.minutes[slot] = Histogram()
                entry.classMinutes[slot] = [UInt64](repeating: 0, count: 6)
            }
            entry.minutes[slot].add(milliseconds: milliseconds)
            entry.classMinutes[slot][statusClass] += 1
            state.apps[app] = entry
        }
    }

    /// Forgets the apps not in `apps` (destroyed: a new app of the same name starts from nothing).
    public func keep(_ apps: Set<String>) {
        state.withLockedValue { state in state.apps = state.apps.filter { apps.contains($0.key) } }
    }

    /// Router log lines dropped because the log could not keep up.
    public func logDropped(_ count: Int) {
        state.withLockedValue { $0.logDropped += UInt64(count) }
    }

    /// One app's recent traffic, for the dashboard and `GET /api/v1/apps/APP/metrics`.
    public struct Summary: Sendable, Equatable {
        public var app: String
        /// Minutes the recent figures cover.
        public var windowMinutes: Int
        /// Responses in the window by status class ("2xx": 10).
        public var recent: [String: UInt64]
        /// Latency percentiles in the window, in milliseconds (nil: no request).
        public var p50: Double?
        public var p95: Double?
        public var p99: Double?
        /// Since the router started.
        public var total: UInt64
        public var bytes: UInt64
    }

    public func summary(app: String) -> Summary {
        let minute = clock() / 60
        return state.withLockedValue { state in
            guard let entry = state.apps[app] else {
                return Summary(app: app, windowMinutes: RouterMetrics.window, recent: [:], total: 0, bytes: 0)
            }
            var merged = Histogram()
            var classes = [UInt64](repeating: 0, count: 6)
            for slot in 0..<RouterMetrics.window where entry.minuteOf[slot] > minute - Int64(RouterMetrics.window) {
                merged.merge(entry.minutes[slot])
                for index in classes.indices { classes[index] += entry.classMinutes[slot][index] }
            }
            var recent: [String: UInt64] = [:]
            for (index, n) in classes.enumerated() where n > 0 { recent[Self.className(index)] = n }
            return Summary(app: app, windowMinutes: RouterMetrics.window, recent: recent, p50: merged.quantile(0.5),
                           p95: merged.quantile(0.95), p99: merged.quantile(0.99), total: entry.byClass.reduce(0, +), bytes: entry.bytes)
        }
    }

    static func className(_ index: Int) -> String { index == 0 ? "other" : "\(index)xx" }

    /// Prometheus text exposition (version 0.0.4) of the apps `visible` lets through.
    public func prometheus(visible: (String) -> Bool = { _ in true }) -> String {
        let (apps, dropped) = state.withLockedValue { state in (state.apps, state.logDropped) }
        let names = apps.keys.filter(visible).sorted()
        var out = ""
        out += "# HELP kbuild_router_requests_total Responses the router sent, by app and status class.\n"
        out += "# TYPE kbuild_router_requests_total counter\n"
        for name in names {
            for (index, n) in apps[name]!.byClass.enumerated() where n > 0 {
                out += "kbuild_router_requests_total{app=\"\(name)\",status=\"\(Self.className(index))\"} \(n)\n"
            }
        }
        out += "# HELP kbuild_router_response_bytes_total Response body bytes sent, by app.\n"
        out += "# TYPE kbuild_router_response_bytes_total counter\n"
        for name in names { out += "kbuild_router_response_bytes_total{app=\"\(name)\"} \(apps[name]!.bytes)\n" }
        out += "# HELP kbuild_router_request_duration_seconds From request head to response end, by app.\n"
        out += "# TYPE kbuild_router_request_duration_seconds histogram\n"
        for name in names {
            let histogram = apps[name]!.latency
            var cumulative: UInt64 = 0
            for (index, bound) in RouterMetrics.bounds.enumerated() {
                cumulative += histogram.buckets[index]
                out += "kbuild_router_request_duration_seconds_bucket{app=\"\(name)\",le=\"\(Self.seconds(bound))\"} \(cumulative)\n"
            }
            out += "kbuild_router_request_duration_seconds_bucket{app=\"\(name)\",le=\"+Inf\"} \(histogram.count)\n"
            out += "kbuild_router_request_duration_seconds_sum{app=\"\(name)\"} \(Self.seconds(histogram.sum))\n"
            out += "kbuild_router_request_duration_seconds_count{app=\"\(name)\"} \(histogram.count)\n"
        }
        out += "# HELP kbuild_router_log_dropped_total Router log lines dropped because the log fell behind.\n"
        out += "# TYPE kbuild_router_log_dropped_total counter\n"
        out += "kbuild_router_log_dropped_total \(dropped)\n"
        return out
    }

    static func seconds(_ milliseconds: Double) -> String {
        let value = milliseconds / 1000
        return value == value.rounded() ? String(Int(value)) : String(value)
    }
}
