public import Foundation
public import Router
public import ServiceLifecycle
import Synchronization
import KbuildState

/// What the router did with each request, written two ways by one service:
///
/// - `<dir>/requests.log`, so `kbuild trace REQUEST-ID` finds which process
///   answered: one line per request, `<router id> <time> <app> <process id>
///   <status> <method> <client's X-Request-Id or -> <path>`. The router's id is
///   unique, so a client that sends another request's id cannot shadow it. The
///   file turns over at 64 MiB (one older file is kept).
/// - `<dir>/logs/APP.router.log`, the app's router lines in Heroku's key=value
///   form (`at=info method=GET path="/" … status=200 bytes=…`), which `kbuild
///   logs APP` merges in as the `router` source. Each file is held under 16 MiB
///   by dropping its older half.
///
/// The router's event loops only append the request to a bounded buffer (no
/// formatting, no I/O); this service formats and writes every 200 ms, off the
/// event loops. When the buffer is full, requests are counted, not kept: each
/// app's log then says how many lines it lost (Heroku's L10), and `/metrics`
/// counts them.
public final class RequestLog: Service, Sendable {
    public let directory: String
    private let pending = Mutex<Pending>(Pending())
    private let metrics: RouterMetrics?
    /// The apps the router serves now (nil until the first table): others' router logs are removed.
    private let kept = Mutex<Set<String>?>(nil)
    static let limit: UInt64 = 64 << 20
    static let appLogLimit: UInt64 = 16 << 20
    /// Requests held between two writes at most: about 20 MB usually, 150 MB at worst (2 KiB targets).
    static let maxPending = 50_000

    struct Pending {
        var entries: [(Date, ServedRequest)] = []
        var dropped: [String: Int] = [:]
    }

    public init(directory: String, metrics: RouterMetrics? = nil) {
        self.directory = directory
        self.metrics = metrics
    }

    var current: String { directory + "/requests.log" }
    var previous: String { directory + "/requests.1.log" }
    /// Where the apps' router lines are: one of the directories `kbuild logs` reads.
    public var appLogDirectory: String { directory + "/logs" }

    /// The apps the router serves now: the router log files of any other go at the next write.
    public func keep(_ apps: Set<String>) {
        kept.withLock { $0 = apps }
    }

    /// Called by the router when a response ends (any thread; cheap).
    public func record(_ served: ServedRequest) {
        guard let app = served.app else { return }
        let now = Date()
        var served = served
        // What a line shows of them, so the buffer's bound holds whatever heads clients send (32 KiB at most).
        if served.uri.utf8.count > 2048 { served.uri = String(decoding: served.uri.utf8.prefix(2048), as: UTF8.self) }
        if served.host.utf8.count > 256 { served.host = String(decoding: served.host.utf8.prefix(256), as: UTF8.self) }
        pending.withLock { pending in
            if pending.entries.count < RequestLog.maxPending {
                pending.entries.append((now, served))
            } else {
                pending.dropped[app, default: 0] += 1
            }
        }
    }

    public func run() async throws {
        try FileManager.default.createDirectory(atPath: appLogDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(200))
                    self.flush()
                }
            }
        } catch is CancellationError {}
        flush()
    }

    func flush() {
        let (entries, dropped) = pending.withLock { pending -> ([(Date, ServedRequest)], [String: Int]) in
            defer {
                pending.entries.removeAll(keepingCapacity: true)
                pending.dropped.removeAll()
            }
            return (pending.entries, pending.dropped)
        }
        removeOthers()
        guard !entries.isEmpty || !dropped.isEmpty else { return }
        // Bytes appended directly (no String per line): this runs beside the event loops, on the same cores.
        var trace: [UInt8] = []
        trace.reserveCapacity(entries.count * 120)
        var byApp: [String: [UInt8]] = [:]
        var stamp = Stamp()
        for (time, served) in entries {
            guard let app = served.app else { continue }
            let (seconds, micros) = Stamp.split(time)
            var line = byApp.removeValue(forKey: app) ?? []
            stamp.appendLogPrefix(seconds: seconds, micros: micros, to: &line)
            served.appendLogLine(to: &line)
            line.append(UInt8(ascii: "\n"))
            byApp[app] = line
            guard let endpoint = served.endpoint else { continue }
            trace += served.traceID.utf8
            trace.append(UInt8(ascii: " "))
            ServedRequest.appendDecimal(seconds, to: &trace)
            trace.append(UInt8(ascii: "."))
            Stamp.appendPadded(micros, to: &trace)
            trace.append(UInt8(ascii: " "))
            trace += app.utf8
            trace.append(UInt8(ascii: " "))
            trace += endpoint.process.utf8
            trace.append(UInt8(ascii: " "))
            ServedRequest.appendDecimal(served.status, to: &trace)
            trace.append(UInt8(ascii: " "))
            trace += served.method.utf8
            trace.append(UInt8(ascii: " "))
            trace += (served.requestID == served.traceID ? "-" : served.requestID).utf8
            trace.append(UInt8(ascii: " "))
            for byte in served.path.utf8.prefix(200) {
                if byte == UInt8(ascii: " ") { trace += "%20".utf8 } else { trace.append(byte) }
            }
            trace.append(UInt8(ascii: "\n"))
        }
        for (app, count) in dropped {
            let line = #"at=error code=L10 desc="Router log buffer full" dropped=\#(count)"#
            byApp[app, default: []] += Array((LogLine.format(Date(), tag: "o", line) + "\n").utf8)
        }
        if !dropped.isEmpty { metrics?.logDropped(dropped.values.reduce(0, +)) }
        if !trace.isEmpty {
            var st = stat()
            if stat(current, &st) == 0, UInt64(st.st_size) > RequestLog.limit { rename(current, previous) }
            Self.append(trace, to: current)
        }
        for (app, bytes) in byApp {
            let file = appLogDirectory + "/" + app + ".router.log"
            Self.append(bytes, to: file)
            Self.holdUnder(RequestLog.appLogLimit, file)
        }
    }

    /// A log line's time as `LogLine` writes it, its date and second made once per second.
    struct Stamp {
        var second = Int.min
        var prefix: [UInt8] = []

        static func split(_ time: Date) -> (seconds: Int, micros: Int) {
            let t = time.timeIntervalSince1970
            var seconds = Int(t.rounded(.down))
            var micros = Int(((t - Double(seconds)) * 1_000_000).rounded())
            if micros == 1_000_000 {
                seconds += 1
                micros = 0
            }
            return (seconds, micros)
        }

        /// `2026-12-07T15:48:02.123456Z o `.
        mutating func appendLogPrefix(seconds: Int, micros: Int, to out: inout [UInt8]) {
            if seconds != second {
                second = seconds
                // "YYYY-MM-DDTHH:MM:SS." of LogLine's own format.
                prefix = Array(LogLine.format(Date(timeIntervalSince1970: Double(seconds)), tag: "o", "").utf8.prefix(20))
            }
            out += prefix
            Self.appendPadded(micros, to: &out)
            out += "Z o ".utf8
        }

        /// Six digits.
        static func appendPadded(_ micros: Int, to out: inout [UInt8]) {
            var divisor = 100_000
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8(micros / divisor % 10))
                divisor /= 10
            }
        }
    }

    /// Removes the router logs of apps the router no longer serves (a destroyed app's).
    func removeOthers() {
        guard let apps = kept.withLock({ state -> Set<String>? in
            defer { state = nil }
            return state
        }) else { return }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: appLogDirectory)) ?? [] where name.hasSuffix(".router.log") {
            if !apps.contains(String(name.dropLast(".router.log".count))) { unlink(appLogDirectory + "/" + name) }
        }
    }

    static func append(_ bytes: [UInt8], to path: String) {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Keeps the newer half of `path` (from a line start) once it is over `limit`; the follow of `kbuild
    /// logs --tail` goes on from the new end of a file that shrank.
    static func holdUnder(_ limit: UInt64, _ path: String) {
        var st = stat()
        guard stat(path, &st) == 0, UInt64(st.st_size) > limit, let handle = FileHandle(forReadingAtPath: path) else { return }
        defer { try? handle.close() }
        try? handle.seek(toOffset: UInt64(st.st_size) - limit / 2)
        guard let tail = try? handle.readToEnd(), let newline = tail.firstIndex(of: UInt8(ascii: "\n")) else { return }
        let kept = tail[(newline + 1)...]
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(kept), attributes: [.posixPermissions: 0o600]) else { return }
        rename(temporary, path)
    }

    /// One logged request.
    public struct Entry: Sendable, Equatable {
        public var requestID: String
        public var time: Date
        public var app: String
        public var process: String
        public var status: Int
        public var method: String
        public var path: String
        /// The X-Request-Id the client sent, when it sent its own.
        public var clientID: String? = nil
    }

    /// The entries for `id`: the request whose router id it is (unique), else
    /// every request a client sent with that X-Request-Id, newest last.
    public static func find(_ id: String, in directory: String) -> [Entry] {
        var byClient: [Entry] = []
        for file in [directory + "/requests.1.log", directory + "/requests.log"] {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            let prefix = Array((id + " ").utf8)
            let client = Array(" \(id) ".utf8)
            for line in data.split(separator: UInt8(ascii: "\n")) {
                let mine = line.starts(with: prefix)
                guard mine || line.firstRange(of: client) != nil, let entry = parse(line) else { continue }
                if mine { return [entry] }
                if entry.clientID == id { byClient.append(entry) }
            }
        }
        return byClient
    }

    /// `<router id> <time> <app> <process> <status> <method> <client's id or -> <path>`.
    static func parse(_ line: some Collection<UInt8>) -> Entry? {
        let f = String(decoding: line, as: UTF8.self).split(separator: " ", maxSplits: 7).map(String.init)
        guard f.count == 8, let t = Double(f[1]), let status = Int(f[4]) else { return nil }
        return Entry(requestID: f[0], time: Date(timeIntervalSince1970: t), app: f[2], process: f[3], status: status, method: f[5],
                     path: f[7], clientID: f[6] == "-" ? nil : f[6])
    }
}
