public import KbuildCore
public import Foundation

/// What `gc` did.
public struct GCReport: Sendable {
    public var reachable = 0
    public var deleted = 0
    public var bytesFreed: UInt64 = 0
    public var keptYoung = 0
    public var cacheFilesDeleted = 0
    public var tmpFilesDeleted = 0
    /// Roots that name objects the Keg does not have (reported, not fatal).
    public var missingRoots: [KID] = []
}

extension Keg {
    /// Deletes every object not reachable from `roots`.
    ///
    /// The caller computes the roots (`RetentionRule` over the refs, their
    /// history and pins). On top of them this keeps: objects younger than
    /// `grace` (a `put` in flight may be about to name them; `freshen` keeps
    /// deduplicated ones young), and every file that a checkout still links to
    /// in the file cache (a running process's lower dir uses it). Unused cache
    /// files of unreachable objects and stale temporary files go too.
    public func gc(roots: Set<KID>, grace: TimeInterval = 3600, dryRun: Bool = false) throws -> GCReport {
        var report = GCReport()
        let now = Date().timeIntervalSince1970
        var marked = Set<KID>()
        var stack: [KID] = []

        // Files in use by a checkout (link count above one) are roots.
        var cacheFiles: [(path: String, kid: KID, links: UInt64, size: UInt64)] = []
        for byte in 0..<256 {
            let fan = Keg.hexByte(byte)
            let dir = filesPath + "/" + fan
            for name in try Keg.listDirectory(dir) {
                guard let dash = name.firstIndex(of: "-"), let kid = try? KID(parsing: fan + name[..<dash]) else { continue }
                var st = stat()
                guard stat(dir + "/" + name, &st) == 0 else { continue }
                cacheFiles.append((dir + "/" + name, kid, UInt64(st.st_nlink), UInt64(st.st_size)))
                if st.st_nlink > 1 { stack.append(kid) }
            }
        }
        for root in roots {
            if contains(root) { stack.append(root) } else { report.missingRoots.append(root) }
        }
        while let kid = stack.popLast() {
            guard marked.insert(kid).inserted, contains(kid) else { continue }
            stack.append(contentsOf: try references(of: kid))
        }
        report.reachable = marked.count

        for kid in try allObjects() where !marked.contains(kid) {
            let path = objectPath(kid)
            var st = stat()
            guard stat(path, &st) == 0 else { continue }
            if now - Double(st.st_mtim.tv_sec) < grace {
                report.keptYoung += 1
                continue
            }
            if dryRun || unlink(path) == 0 {
                report.deleted += 1
                report.bytesFreed += UInt64(st.st_size)
            }
        }
        for file in cacheFiles where file.links == 1 && !marked.contains(file.kid) {
            if dryRun || unlink(file.path) == 0 {
                report.cacheFilesDeleted += 1
                report.bytesFreed += file.size
            }
        }
        for path in try stagingFiles() {
            var st = stat()
            guard lstat(path, &st) == 0, now - Double(st.st_mtim.tv_sec) >= grace else { continue }
            if dryRun || unlink(path) == 0 { report.tmpFilesDeleted += 1 }
        }
        return report
    }
}
