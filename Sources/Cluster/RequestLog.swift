public import Foundation
public import Router
public import ServiceLifecycle
import Synchronization
import KbuildState

/// Which process answered each request the router served, so `kbuild trace
/// REQUEST-ID` finds it: one line per request, `<router id> <time> <app>
/// <process id> <status> <method> <client's X-Request-Id or -> <path>`, in
/// `<dir>/requests.log`. The router's id is unique, so a client that sends
/// another request's id cannot shadow it. The router's event loops only
/// append to a buffer; this service writes it out every 200 ms. The file turns over at 64 MiB (one older file is kept).
public final class RequestLog: Service, Sendable {
    public let directory: String
    private let buffer = Mutex<[UInt8]>([])
    static let limit: UInt64 = 64 << 20

    public init(directory: String) {
        self.directory = directory
    }

    var current: String { directory + "/requests.log" }
    var previous: String { directory + "/requests.1.log" }

    /// Called by the router when a response ends (any thread; cheap).
    public func record(_ served: ServedRequest) {
        guard let endpoint = served.endpoint, let app = served.app else { return }
        let path = served.path.utf8.count > 200 ? String(served.path.prefix(200)) : served.path
        let client = served.requestID == served.traceID ? "-" : served.requestID
        let line = "\(served.traceID) \(Date().timeIntervalSince1970) \(app) \(endpoint.process) \(served.status) \(served.method) \(client) \(path.replacingOccurrences(of: " ", with: "%20"))\n"
        buffer.withLock { $0 += Array(line.utf8) }
    }

    public func run() async throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
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
        let bytes = buffer.withLock { b -> [UInt8] in
            defer { b.removeAll(keepingCapacity: true) }
            return b
        }
        guard !bytes.isEmpty else { return }
        var st = stat()
        if stat(current, &st) == 0, UInt64(st.st_size) > RequestLog.limit { rename(current, previous) }
        let fd = open(current, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
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
