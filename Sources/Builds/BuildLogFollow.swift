public import KbuildCore
import Keg
public import KbuildState
import Foundation
import NIOPosix

/// Follows one build's log while it runs, for whoever waits on it (a push,
/// `kbuild logs K-… --tail`): the live copy of the worker that holds the
/// build's claim, read from where the last look ended, then the rest of the
/// stored log once the result is in. The live copies are on the control
/// plane's disk whatever machine the worker is on (a worker here writes its
/// copy, one elsewhere sends it through the API), so nothing here depends on
/// where the build runs. A worker that takes the build over, or starts it
/// again (its copy is then shorter than what was read), is followed from its
/// start, and the reader is told.
public struct BuildLogFollower: Sendable {
    public let queue: BuildQueue
    public let build: KID
    /// The worker whose copy is followed.
    public private(set) var worker: String?
    /// When the followed attempt started (as seen from here).
    public private(set) var attemptStarted = ContinuousClock.now
    private var offset: UInt64 = 0

    public init(queue: BuildQueue, build: KID) {
        self.queue = queue
        self.build = build
    }

    /// What the worker `holder` (the holder of a live claim, if any) wrote since the last look.
    public mutating func read(holder: String?) -> [UInt8] {
        var out: [UInt8] = []
        if let holder, holder != worker {
            if worker != nil { out += Array("       (the build started again, on \(holder))\n".utf8) }
            worker = holder
            offset = 0
            attemptStarted = .now
        }
        guard let worker else { return out }
        let path = queue.liveLogPath(build, worker: worker)
        var st = stat()
        if offset > 0, stat(path, &st) == 0, UInt64(st.st_size) < offset {
            out += Array("       (the build started again, on \(worker))\n".utf8)
            offset = 0
            attemptStarted = .now
        }
        // A piece at a time: a reader far behind catches up over several looks, holding 1 MiB at most.
        let (bytes, next) = BuildLog.read(path, from: offset, max: 1 << 20)
        offset = next
        return out + bytes
    }

    /// The rest of the log of the finished build `record`, from the Keg (the live copies go when the result is in):
    /// past what was read when the same worker's copy was followed, else all of it.
    public mutating func rest(of record: BuildRecord) throws -> [UInt8] {
        var out: [UInt8] = []
        if let worker, worker != record.worker { out += Array("       (the build started again, on \(record.worker))\n".utf8) }
        if let log = record.log {
            let stored = try queue.keg.logicalBytes(log, maxWhole: 64 << 20)
            let from = worker == record.worker ? Int(min(offset, UInt64(stored.count))) : 0
            if from < stored.count { out += stored[from...] }
        }
        worker = record.worker
        offset = 0
        return out
    }

    /// `read(holder:)` and `rest(of:)` off the cooperative threads (they read files), for a server.
    public mutating func next(holder: String?) async throws -> [UInt8] {
        let (bytes, after) = try await NIOThreadPool.singleton.runIfActive { [self] in
            var copy = self
            return (copy.read(holder: holder), copy)
        }
        self = after
        return bytes
    }

    public mutating func last(of record: BuildRecord) async throws -> [UInt8] {
        let (bytes, after) = try await NIOThreadPool.singleton.runIfActive { [self] in
            var copy = self
            return (try copy.rest(of: record), copy)
        }
        self = after
        return bytes
    }
}
