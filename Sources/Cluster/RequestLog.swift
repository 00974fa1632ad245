public import Foundation
public import Router
public import ServiceLifecycle
import Synchronization

/// Which process answered each request the router served, so `kbuild trace
/// REQUEST-ID` finds it: one line per request, `<request id> <time> <app>
/// <process id> <status> <method> <path>`, in `<dir>/requests.log`. The
/// router's event loops only append to a buffer; this service writes it out
/// every 200 ms. The file turns over at 64 MiB (one older file is kept).
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
        let line = "\(served.requestID) \(Date().timeIntervalSince1970) \(app) \(endpoint.process) \(served.status) \(served.method) \(path.replacingOccurrences(of: " ", with: "%20"))\n"
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
    }

    /// The newest entry for `id`, searching the newest file first.
    public static func find(_ id: String, in directory: String) -> Entry? {
        for file in [directory + "/requests.log", directory + "/requests.1.log"] {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            let prefix = Array((id + " ").utf8)
            var found: Entry?
            for line in data.split(separator: UInt8(ascii: "\n")) where line.starts(with: prefix) {
                let f = String(decoding: line, as: UTF8.self).split(separator: " ", maxSplits: 6).map(String.init)
                guard f.count == 7, let t = Double(f[1]), let status = Int(f[4]) else { continue }
                found = Entry(requestID: f[0], time: Date(timeIntervalSince1970: t), app: f[2], process: f[3], status: status, method: f[5], path: f[6])
            }
            if let found { return found }
        }
        return nil
    }
}
