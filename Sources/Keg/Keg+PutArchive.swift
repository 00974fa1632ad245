import KbuildCore
import CKbuild
import Foundation
import Synchronization

// What `putWithArchive` keeps beside a put: its checks, the stamps that prove
// a file unchanged, and the archive's hash on a thread of its own.

/// `putWithArchive`'s checks: how long ago a file's last change must be
/// for its stat to prove it unchanged, and (for tests) what to do before the
/// final check.
struct ArchiveChecks {
    var settledAge: Double = 1
    var beforeIngest: (() -> Void)?
    var beforeCheck: (() -> Void)?
}

extension Ingest {
    /// Local filesystems whose ctime has nanoseconds and is never cached: ext4, xfs, btrfs, tmpfs, overlayfs.
    static func finelyTimed(_ fd: Int32) -> Bool {
        [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x794C_7630].contains(kb_fs_type(fd))
    }
}

/// The stamps of the files an ingest opened, by index.
final class OpenedStamps: Sendable {
    let stamps: Mutex<[FileStamp?]>
    init(count: Int) { stamps = Mutex([FileStamp?](repeating: nil, count: count)) }
}

/// What says a file has not changed: its inode, size and times.
struct FileStamp: Equatable {
    var device: UInt64, inode: UInt64, size: Int64
    /// ctime in seconds (the kernel moves it on every change; no call sets it back).
    var changed: Double
    var ctimeNanoseconds: Int, mtimeSeconds: Int, mtimeNanoseconds: Int

    init(_ st: stat) {
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        changed = Double(st.st_ctim.tv_sec) + Double(st.st_ctim.tv_nsec) / 1e9
        ctimeNanoseconds = st.st_ctim.tv_nsec
        mtimeSeconds = st.st_mtim.tv_sec
        mtimeNanoseconds = st.st_mtim.tv_nsec
    }

    /// Now, on the clock file times are taken from.
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// An archive's hash, made on a thread of its own (beside the ingest, which
/// has every core through Dispatch; a nested `concurrentPerform` would run inline).
final class ArchiveDigest: @unchecked Sendable {
    typealias Made = (kid: KID, files: [KID?], stamps: [FileStamp?])
    // Written by the thread before `done` is signalled, read after `wait`.
    private var result: Result<Made, any Error>?
    private let done = DispatchSemaphore(value: 0)
    /// Set to make the thread give up at its next file.
    private let stop = Atomic<Bool>(false)

    init(_ body: @escaping @Sendable (_ stopped: () -> Bool) throws -> Made) {
        let thread = Thread { [self] in
            result = Result { try body { self.stop.load(ordering: .relaxed) } }
            done.signal()
        }
        thread.start()
    }

    func wait() throws -> Made {
        done.wait()
        done.signal()  // a second wait returns at once
        return try result!.get()
    }

    /// Ends the thread soon (it stops at its next file) and waits for it.
    func stopAndWait() {
        stop.store(true, ordering: .relaxed)
        _ = try? wait()
    }
}
