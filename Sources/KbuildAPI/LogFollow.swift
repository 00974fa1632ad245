import Cluster
import Foundation
import Hummingbird
import KbuildCore
import NIOPosix
import ServiceLifecycle

/// `kbuild logs APP --tail`: the server pushes an app's new lines as they
/// are written, on one response that stays open, instead of the client
/// asking again and again. After the recent lines, the app's log files
/// (every node's, joined nodes' copies included) are read from where they
/// ended, four times a second, with the files of processes started meanwhile;
/// each pass's lines go out in time order. A line is sent once it is whole.
/// The response ends when the client goes, when the server shuts down, or
/// after an hour (the CLI then asks again from where it was).
extension APIRoutes {
    static var followFor: Duration { .seconds(3600) }

    func followResponse(_ app: String, process: String?, release: Int64?, lines: Int) async throws -> Response {
        // The recent lines, and where each file's whole lines end: what follows is new (none twice, none lost).
        let (recent, ends) = tailAndEnds(try await logSources(app, process: process, release: release), lines: lines)
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: ResponseBody { [ends] writer in
            try await writer.write(ByteBuffer(string: recent))
            var offsets = ends
            var sources = try await self.logSources(app, process: process, release: release)
            var lastListing = ContinuousClock.now
            let deadline = ContinuousClock.now + Self.followFor
            // Until the client goes (a write throws), the server shuts down, or the hour is over.
            while ContinuousClock.now < deadline && !Task.isShuttingDownGracefully && !Task.isCancelled {
                try await Task.sleep(for: .milliseconds(250))
                // New processes' files, every two seconds (the listing reads the app's process list).
                if ContinuousClock.now - lastListing > .seconds(2) {
                    sources = try await self.logSources(app, process: process, release: release)
                    lastListing = .now
                }
                let (listed, from) = (sources, offsets)
                let pass = try await NIOThreadPool.singleton.runIfActive { Self.newLines(listed, from: from) }
                offsets = pass.offsets
                if !pass.text.isEmpty { try await writer.write(ByteBuffer(bytes: pass.text)) }
            }
            try await writer.finish(nil)
        })
    }

    /// The whole lines written to `sources` past `offsets` (a file not there yet: from its start), formatted
    /// and in time order, with the offsets after them. A file that shrank (its cap cut its head) goes on from its new end.
    static func newLines(_ sources: [LogMerge.Source], from offsets: [String: UInt64]) -> (text: [UInt8], offsets: [String: UInt64]) {
        var next = offsets
        var lines: [(Date, [UInt8])] = []
        for source in sources {
            let size = Self.size(source.path)
            var offset = offsets[source.path] ?? 0
            if size < offset { offset = size }
            next[source.path] = offset
            guard size > offset, let handle = FileHandle(forReadingAtPath: source.path) else { continue }
            defer { try? handle.close() }
            try? handle.seek(toOffset: offset)
            let chunk = Array((try? handle.read(upToCount: Int(min(size - offset, 4 << 20)))) ?? Data())
            guard let lastNewline = chunk.lastIndex(of: UInt8(ascii: "\n")) else { continue }
            for raw in chunk[...lastNewline].split(separator: UInt8(ascii: "\n")) {
                guard let line = LogLine.parse(Substring(decoding: raw, as: UTF8.self)) else { continue }
                var formatted: [UInt8] = []
                source.format(raw, into: &formatted)
                lines.append((line.time, formatted))
            }
            next[source.path] = offset + UInt64(lastNewline + 1)
        }
        lines.sort { $0.0 < $1.0 }
        return (lines.flatMap(\.1), next)
    }

    static func size(_ path: String) -> UInt64 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_size) : 0
    }
}
