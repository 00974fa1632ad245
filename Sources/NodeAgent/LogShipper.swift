import KbuildCore
public import KbuildState
import Foundation

/// Sends what the node's processes write to their log files to the control
/// plane (`LogSink`), for a node that joined over the network: every half
/// second, each file's new bytes (1 MiB per call at most). A file that
/// shrank (its cap dropped its head) is sent again whole. When the control
/// plane cannot be reached, the bytes wait in the file and go when it can.
public struct LogShipper: Sendable {
    let node: String
    let directory: String
    let sink: any LogSink
    let log: @Sendable (String) -> Void
    static let chunk = 1 << 20

    /// `node`: the name the copies are kept under (a router ships as `router-HOST`).
    public init(node: String, directory: String, sink: any LogSink, log: @escaping @Sendable (String) -> Void) {
        self.node = node
        self.directory = directory
        self.sink = sink
        self.log = log
    }

    public func run() async {
        var shipped: [String: UInt64] = [:]
        var refused: Set<String> = []
        var lastError: String?
        while !Task.isCancelled {
            do {
                try await pass(&shipped, refused: &refused)
                lastError = nil
            } catch is CancellationError {
                return
            } catch {
                let text = "\(error)"
                if text != lastError { log("agent \(node): failed to send logs (they wait on this node): \(text)") }
                lastError = text
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }

    /// One pass over the files. A file the control plane refuses (403: a process no longer assigned whose copy
    /// was never started, or was dropped) is skipped from then on; any other failure ends the pass (the control
    /// plane is away: the bytes wait).
    func pass(_ shipped: inout [String: UInt64], refused: inout Set<String>) async throws {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter(ShippedLogName.isValid)
        shipped = shipped.filter { names.contains($0.key) }
        refused = refused.filter { names.contains($0) }
        for name in names where !refused.contains(name) {
            try Task.checkCancellation()
            do {
                try await ship(name, &shipped)
            } catch let e as KbuildError where e.code == .forbidden {
                refused.insert(name)
                log("agent \(node): the control plane keeps no copy of \(name): \(e.message)")
            }
        }
    }

    /// Sends what the control plane's copy of `name` lacks.
    func ship(_ name: String, _ shipped: inout [String: UInt64]) async throws {
        let path = directory + "/" + name
        guard let handle = FileHandle(forReadingAtPath: path) else { return }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        var offset: UInt64
        if let known = shipped[name], known <= size {
            if known == size { return }
            offset = known
        } else {
            // Not known (this agent restarted) or the file shrank (its cap cut its head): ask where the copy is.
            switch try await sink.appendLog(node: node, file: name, offset: size, bytes: []) {
            case .stored(let s): offset = s
            case .mismatch(let s): offset = shipped[name] == nil && s <= size ? s : 0
            }
            if offset == 0 {
                // A fresh copy: the first piece replaces whatever the control plane had.
                try handle.seek(toOffset: 0)
                let first = Array(try handle.read(upToCount: Self.chunk) ?? Data())
                guard case .stored(let s) = try await sink.appendLog(node: node, file: name, offset: 0, bytes: first) else { return }
                offset = s
            }
        }
        shipped[name] = offset
        while offset < size {
            try Task.checkCancellation()
            try handle.seek(toOffset: offset)
            let bytes = Array(try handle.read(upToCount: Self.chunk) ?? Data())
            if bytes.isEmpty { break }
            guard case .stored(let s) = try await sink.appendLog(node: node, file: name, offset: offset, bytes: bytes) else {
                shipped[name] = nil  // asked again next pass
                break
            }
            offset = s
            shipped[name] = offset
        }
    }
}
