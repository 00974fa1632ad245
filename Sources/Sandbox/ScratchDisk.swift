import KbuildCore
import Foundation

/// A directory with a size the kernel enforces: a sparse ext4 image
/// (`<dir>.img`) loop-mounted at `<dir>` (nosuid, nodev). Writes past the
/// size fail with ENOSPC, whatever writes them and wherever inside. The host
/// root filesystem here has no project quotas, and a size-limited tmpfs would
/// charge the bytes to memory, so a build's disk (`/app`, `/cache`, `/env`)
/// is one of these. The image costs only what is written (it is sparse), and
/// `mkfs` of 2 GiB takes about 10 ms.
public struct ScratchDisk: Sendable {
    public let path: String
    public var image: String { path + ".img" }

    /// Makes the image and mounts it at `path` (which must not exist).
    public static func make(at path: String, size: UInt64) async throws -> ScratchDisk {
        let disk = ScratchDisk(path: path)
        try await offThread { try disk.makeNow(size: size) }
        return disk
    }

    func makeNow(size: UInt64) throws {
        guard mkdir(path, 0o700) == 0 else { throw KbuildError.syscall("mkdir", path, verb: "make a build disk") }
        do {
            let fd = open(image, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw KbuildError.syscall("open", image, verb: "make a build disk") }
            defer { close(fd) }
            guard ftruncate(fd, off_t(size)) == 0 else { throw KbuildError.syscall("ftruncate", image, verb: "make a build disk") }
            // No journal (it is thrown away), no blocks reserved for root, an inode per 8 KiB (node_modules).
            try ScratchDisk.tool(["/usr/sbin/mkfs.ext4", "-q", "-F", "-m", "0", "-i", "8192", "-O", "^has_journal",
                                  "-E", "lazy_itable_init=1,root_owner=0:0", image], what: "format the build disk \(image)")
            try ScratchDisk.tool(["/usr/bin/mount", "-o", "loop,nosuid,nodev", image, path], what: "mount the build disk \(image)")
        } catch {
            removeNow()
            throw error
        }
    }

    /// Unmounts and removes it (the loop device goes with the last reference).
    public func remove() async {
        try? await offThread { removeNow() }
    }

    func removeNow() {
        // Always (an error when nothing is mounted is harmless): /proc/self/mounts
        // shows resolved, escaped paths, so asking it first could miss the mount.
        _ = try? Tool.run(["/usr/bin/umount", "-l", path], input: nil)
        if rmdir(path) != 0 && errno == ENOTEMPTY { try? FileManager.default.removeItem(atPath: path) }
        unlink(image)
    }

    /// Removes the disks under `directory` whose owner (the process id in
    /// their name, `<…>-<pid>-<…>`) is gone: what a killed worker left.
    public static func sweep(directory: String) async -> Int {
        (try? await offThread { sweepNow(directory: directory) }) ?? 0
    }

    static func sweepNow(directory: String) -> Int {
        var removed = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasSuffix(".img") {
            let base = String(name.dropLast(4))
            let parts = base.split(separator: "-")
            guard parts.count >= 3, let pid = Int32(parts[parts.count - 2]), kill(pid, 0) != 0 && errno == ESRCH else { continue }
            ScratchDisk(path: directory + "/" + base).removeNow()
            removed += 1
        }
        return removed
    }

    static func tool(_ argv: [String], what: String) throws {
        let r = try Tool.run(argv, input: nil)
        guard r.status == 0 else { throw KbuildError(.io, "failed to \(what): \(argv[0]): \(r.output.trimmingCharacters(in: .whitespacesAndNewlines))") }
    }
}
