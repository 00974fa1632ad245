import KbuildCore
import Foundation

/// A persistent volume on a node: a sparse ext4 image `<directory>/<id>.img`
/// loop-mounted at `<directory>/<id>` (nosuid, nodev), as a build's
/// `ScratchDisk` is, but kept: it has a journal (a database's fsync must mean
/// something), it is mounted again after a restart, and it goes only when
/// `remove` is called. Its root belongs to the sandbox's root (`IDRange`'s
/// base), so processes mount it without an idmap and what they write there
/// belongs to their unprivileged host ids. The kernel stops writes at the
/// size: ENOSPC inside, nothing else on the host filled.
public struct VolumeDisk: Sendable {
    public let directory: String
    public let id: String
    public var path: String { directory + "/" + id }
    public var image: String { path + ".img" }

    public init(directory: String, id: String) {
        self.directory = directory
        self.id = id
    }

    /// Whether a file system is mounted at `path` (its device differs from its parent's).
    public var isMounted: Bool {
        var here = stat(), parent = stat()
        return stat(path, &here) == 0 && stat(directory, &parent) == 0 && here.st_dev != parent.st_dev
    }

    public var exists: Bool { access(image, F_OK) == 0 }

    /// Mounts it when it is not mounted; makes the image first when there is
    /// none and `make` says this is its first making (a volume made once is
    /// never made again empty: a missing image is an error).
    public func ensure(size: UInt64, owner: IDRange = .default, make: Bool) async throws {
        if isMounted { return }
        try await offThread { try ensureNow(size: size, owner: owner, make: make) }
    }

    func ensureNow(size: UInt64, owner: IDRange, make: Bool) throws {
        if isMounted { return }
        if mkdir(directory, 0o700) != 0 && errno != EEXIST { throw KbuildError.syscall("mkdir", directory, verb: "make volume \(id)") }
        if !exists && !make {
            throw KbuildError(.notFound, "volume \(id)'s disk \(image) is not on this node; it was made before, so it is not made again empty")
        }
        if !exists {
            let temporary = path + ".new.img"
            unlink(temporary)
            let fd = open(temporary, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw KbuildError.syscall("open", temporary, verb: "make volume \(id)") }
            do {
                defer { close(fd) }
                // Every block taken now: a sparse image on a host disk that fills up would fail under its file system.
                let allocated = posix_fallocate(fd, 0, off_t(size))
                guard allocated == 0 else {
                    errno = allocated
                    throw KbuildError.syscall("fallocate", temporary, verb: "make volume \(id) (\(size >> 20) MiB)")
                }
                // A journal; no blocks reserved (root inside is not root here); the sandbox's root owns the top.
                try ScratchDisk.tool(["/usr/sbin/mkfs.ext4", "-q", "-F", "-m", "0", "-L", String(id.suffix(16)),
                                      "-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=\(owner.base):\(owner.base)", temporary],
                                     what: "format volume \(id)")
                guard fsync(fd) == 0 else { throw KbuildError.syscall("fsync", temporary, verb: "make volume \(id)") }
            } catch {
                unlink(temporary)
                throw error
            }
            // Whole or not at all: a crash before this leaves only the .new.img, which the next try replaces.
            guard rename(temporary, image) == 0 else {
                unlink(temporary)
                throw KbuildError.syscall("rename", image, verb: "make volume \(id)")
            }
        }
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw KbuildError.syscall("mkdir", path, verb: "mount volume \(id)") }
        try ScratchDisk.tool(["/usr/bin/mount", "-o", "loop,nosuid,nodev", image, path], what: "mount volume \(id)")
    }

    /// Bytes in use inside (nil when not mounted).
    public var used: UInt64? {
        guard isMounted else { return nil }
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        return UInt64(s.f_blocks - s.f_bfree) * UInt64(s.f_frsize)
    }

    /// Bytes of the host's disk the image may still take as it fills (its
    /// size less what it holds already): what the node has promised it.
    public var promised: UInt64 {
        var st = stat()
        guard stat(image, &st) == 0 else { return 0 }
        let held = UInt64(st.st_blocks) * 512
        return UInt64(st.st_size) > held ? UInt64(st.st_size) - held : 0
    }

    /// Unmounts it; the image stays (`kbuild down`, before a reboot).
    public func unmount() async {
        _ = try? await offThread { unmountNow() }
    }

    func unmountNow() {
        // Not lazily: a volume still in use stays mounted (and says so) rather than vanishing under a writer.
        if isMounted { _ = try? Tool.run(["/usr/bin/umount", path], input: nil) }
        rmdir(path)
    }

    /// Unmounts it and deletes its data for good.
    public func remove() async throws {
        try await offThread {
            unmountNow()
            // A sandbox's mount is a clone of ours: the host's unmount succeeds under it, but its loop device stays bound.
            let bound = (try? Tool.run(["/usr/sbin/losetup", "-j", image], input: nil).output) ?? ""
            guard !isMounted, bound.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw KbuildError(.conflict, "failed to remove volume \(id): it is still in use on this node")
            }
            if unlink(image) != 0 && errno != ENOENT { throw KbuildError.syscall("unlink", image, verb: "remove volume \(id)") }
            unlink(path + ".new.img")
        }
    }

    /// Every volume image under `directory`, by id.
    public static func all(in directory: String) -> [VolumeDisk] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasSuffix(".img") && !$0.hasSuffix(".new.img") }
            .map { VolumeDisk(directory: directory, id: String($0.dropLast(4))) }
    }

    /// Bytes free on the file system that holds `directory`, less what its volumes may still take.
    public static func space(in directory: String) -> UInt64? {
        var s = statvfs()
        guard statvfs(FileManager.default.fileExists(atPath: directory) ? directory : (directory as NSString).deletingLastPathComponent, &s) == 0 else { return nil }
        let free = UInt64(s.f_bavail) * UInt64(s.f_frsize)
        let promised = all(in: directory).reduce(UInt64(0)) { $0 + $1.promised }
        return free > promised ? free - promised : 0
    }
}
