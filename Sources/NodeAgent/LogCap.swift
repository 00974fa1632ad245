public import Foundation
import Cluster
import CKbuild
import KbuildState

/// The size cap on an app's logs on a node.
public enum LogCap {
    /// One log file as the sweep sees it.
    public struct File: Sendable, Equatable {
        public var app: String
        public var id: String
        public var size: UInt64
        public var modified: Date
        public init(app: String, id: String, size: UInt64, modified: Date) {
            self.app = app
            self.id = id
            self.size = size
            self.modified = modified
        }
    }

    /// What to drop from the head of each file (bytes; the whole size means the whole file).
    public struct Cut: Sendable, Equatable {
        public var id: String
        public var bytes: UInt64
        public init(id: String, bytes: UInt64) {
            self.id = id
            self.bytes = bytes
        }
    }

    /// Keeps each app's logs under `capPerApp`, dropping the oldest output
    /// first: the files changed longest ago lose their heads (or go whole),
    /// so the newest lines of every app are what stays. Returns what it cut.
    @discardableResult
    public static func sweep(directory: String, capPerApp: UInt64) -> [Cut] {
        var files: [File] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasSuffix(".log") {
            guard let attrs = try? FileManager.default.attributesOfItem(atPath: directory + "/" + name) else { continue }
            let id = String(name.dropLast(4))
            files.append(File(app: String(id.split(separator: ".").first ?? ""), id: id, size: (attrs[.size] as? UInt64) ?? 0,
                              modified: (attrs[.modificationDate] as? Date) ?? .distantPast))
        }
        let cuts = plan(files, capPerApp: capPerApp)
        let sizes = Dictionary(files.map { ($0.id, $0.size) }, uniquingKeysWith: { a, _ in a })
        for cut in cuts {
            let path = directory + "/\(cut.id).log"
            if cut.bytes >= sizes[cut.id] ?? 0 {
                // The whole file: truncated, not unlinked, so a process still writing keeps its file.
                let fd = open(path, O_WRONLY | O_CLOEXEC)
                if fd >= 0 { _ = ftruncate(fd, 0); close(fd) }
            } else {
                let fd = open(path, O_RDWR | O_CLOEXEC)
                guard fd >= 0 else { continue }
                let dropped = kb_drop_head(fd, cut.bytes)
                if dropped > 0 {
                    let note = LogLine.format(Date(), tag: "k", "kbuild: dropped the oldest \(dropped) bytes of this process's output (the app's logs on this node are capped at \(capPerApp) bytes)") + "\n"
                    _ = lseek(fd, 0, SEEK_END)
                    _ = note.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
                }
                close(fd)
            }
        }
        // Empty logs of processes long gone take no room but clutter the directory.
        for f in files where f.size == 0 && Date().timeIntervalSince(f.modified) > 86400 { unlink(directory + "/\(f.id).log") }
        return cuts
    }

    /// The pure decision: per app over its cap, the oldest files first, each
    /// cut by what is still over (whole when that is all of it).
    public static func plan(_ files: [File], capPerApp: UInt64) -> [Cut] {
        var out: [Cut] = []
        for (_, group) in Dictionary(grouping: files, by: \.app) {
            var total = group.reduce(0) { $0 + $1.size }
            for f in group.sorted(by: { ($0.modified, $0.id) < ($1.modified, $1.id) }) where total > capPerApp && f.size > 0 {
                let cut = min(f.size, total - capPerApp)
                out.append(Cut(id: f.id, bytes: cut))
                total -= cut
            }
        }
        return out.sorted { $0.id < $1.id }
    }
}
