import KbuildCore
import Foundation

/// What the Keg holds.
public struct KegStats: Sendable {
    public struct Kind: Sendable {
        public var objects = 0
        /// Bytes on disk (headers and compressed payloads).
        public var stored: UInt64 = 0
        /// Bytes the KIDs name.
        public var logical: UInt64 = 0
    }
    public var byKind: [ObjectKind: Kind] = [:]
    public var compressed = 0
    public var cacheFiles = 0
    public var cacheBytes: UInt64 = 0
    public var tmpFiles = 0

    public var objects: Int { byKind.values.reduce(0) { $0 + $1.objects } }
    public var stored: UInt64 { byKind.values.reduce(0) { $0 + $1.stored } }
}

extension Keg {
    /// Counts objects by kind with their stored and logical sizes (reads headers only).
    public func stats() throws -> KegStats {
        var stats = KegStats()
        for kid in try allObjects() {
            var storedSize: UInt64
            let header: ObjectHeader
            if let location = packs.locate(kid) {
                guard let bytes = try? packs.read(location, kid: kid),
                      let h = try? bytes.withUnsafeBytes({ try ObjectHeader(decoding: $0, kid: kid) }) else { continue }
                header = h
                storedSize = UInt64(location.length)
            } else {
                let path = objectPath(kid)
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { continue }
                defer { close(fd) }
                var st = stat()
                var head = [UInt8](repeating: 0, count: ObjectHeader.size)
                guard fstat(fd, &st) == 0, head.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, $0.count, 0) }) == ObjectHeader.size,
                      let h = try? head.withUnsafeBytes({ try ObjectHeader(decoding: $0, kid: kid) })
                else { continue }
                header = h
                storedSize = UInt64(st.st_size)
            }
            stats.byKind[header.kind, default: .init()].objects += 1
            stats.byKind[header.kind, default: .init()].stored += storedSize
            stats.byKind[header.kind, default: .init()].logical += header.logicalSize
            if header.encoding == .zstd { stats.compressed += 1 }
        }
        for file in try cacheFiles() {
            stats.cacheFiles += 1
            stats.cacheBytes += file.size
        }
        stats.tmpFiles = try stagingFiles().count
        return stats
    }
}
