public import Foundation

/// Merges the log files of an app's processes by time, streaming: each file
/// is already in time order (its helper wrote it), so a k-way merge reads
/// each once, in chunks, and holds one line per file. Memory stays bounded
/// by the number of files, whatever the size of the logs.
public struct LogMerge {
    public struct Source: Sendable {
        public var path: String
        /// The process ("web.1") and short commit put before each line's text.
        public var name: String
        public var commit: String
        public init(path: String, name: String, commit: String) {
            self.path = path
            self.name = name
            self.commit = commit
        }

        /// "TIME web.1[err] 1a2b3c4: text" for a line as the helper wrote it ("TIME e text").
        public func format(_ line: some Collection<UInt8>, into out: inout [UInt8]) {
            let bytes = Array(line)
            out += bytes.prefix(27)
            out.append(UInt8(ascii: " "))
            out += Array(name.utf8)
            let tag = bytes.count > 28 ? bytes[28] : UInt8(ascii: "o")
            if tag == UInt8(ascii: "e") { out += Array("[err]".utf8) } else if tag == UInt8(ascii: "k") { out += Array("[kbuild]".utf8) }
            out.append(UInt8(ascii: " "))
            out += Array(commit.utf8)
            out += Array(": ".utf8)
            if bytes.count > 30 { out += bytes[30...] }
            out.append(UInt8(ascii: "\n"))
        }
    }

    final class Reader {
        let fd: Int32
        let source: Source
        var buffer: [UInt8] = []
        var start = 0
        var eof = false
        var line: (time: Date, text: [UInt8])?

        init?(_ source: Source) {
            fd = open(source.path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return nil }
            self.source = source
        }

        deinit { close(fd) }

        /// The next line that parses (a line without the helper's prefix is skipped), or nil at the end.
        func next() -> (time: Date, text: [UInt8])? {
            while true {
                if let nl = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                    let raw = buffer[start..<nl]
                    start = nl + 1
                    let text = Substring(decoding: raw, as: UTF8.self)
                    if let l = LogLine.parse(text) { return (l.time, Array(raw)) }
                    continue
                }
                if eof { return nil }
                buffer.removeFirst(start)
                start = 0
                var chunk = [UInt8](repeating: 0, count: 256 << 10)
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n <= 0 {
                    eof = true
                    if !buffer.isEmpty { buffer.append(UInt8(ascii: "\n")) }  // a last line without its newline
                } else {
                    buffer += chunk[0..<n]
                }
            }
        }
    }

    let readers: [Reader]
    let since: Date?

    public init(_ sources: [Source], since: Date?) {
        readers = sources.compactMap(Reader.init)
        self.since = since
    }

    /// Calls `emit` with output chunks (about 256 KiB each) of formatted lines
    /// `TIME web.1[err] 1a2b3c4: text`, in time order.
    public func run(_ emit: ([UInt8]) async throws -> Void) async throws {
        for r in readers {
            repeat { r.line = r.next() } while since != nil && r.line != nil && r.line!.time < since!
        }
        var out: [UInt8] = []
        out.reserveCapacity(300 << 10)
        // A binary min-heap of the readers by their next line's time.
        var heap = readers.filter { $0.line != nil }
        func earlier(_ a: Int, _ b: Int) -> Bool { heap[a].line!.time < heap[b].line!.time }
        func down(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && earlier(l, m) { m = l }
                if r < heap.count && earlier(r, m) { m = r }
                if m == i { return }
                heap.swapAt(i, m)
                i = m
            }
        }
        for i in stride(from: heap.count / 2 - 1, through: 0, by: -1) { down(i) }
        while let r = heap.first, let line = r.line {
            r.source.format(line.text, into: &out)
            if out.count >= 256 << 10 {
                try await emit(out)
                out.removeAll(keepingCapacity: true)
            }
            r.line = r.next()
            if r.line == nil {
                heap.swapAt(0, heap.count - 1)
                heap.removeLast()
            }
            if !heap.isEmpty { down(0) }
        }
        if !out.isEmpty { try await emit(out) }
    }
}
