import KbuildCore
public import Keg
public import KbuildState
import Builds
import Foundation
import OCI

/// What an app may use, set by the admin (`kbuild apps:limits`), at
/// `apps/APP/limits`. Nil: no limit beyond the host's.
public struct AppLimits: Codable, Sendable, Equatable {
    public var kind = "kbuild.app-limits/v1"
    /// Bytes of pushed sources and built images the app holds in the Keg.
    public var kegBytes: UInt64?
    /// Memory of all its processes at once: the formation's, and one-off runs'.
    public var memory: UInt64?
    /// CPUs of the same.
    public var cpus: Double?
    /// Builds queued or running at once.
    public var builds: Int?
    /// Bytes of volumes (nil: `VolumeRecord.defaultAppLimit`, so that no app fills its nodes' disks unless the admin says so).
    public var volumeBytes: UInt64?

    public init(kegBytes: UInt64? = nil, memory: UInt64? = nil, cpus: Double? = nil, builds: Int? = nil, volumeBytes: UInt64? = nil) {
        self.kegBytes = kegBytes
        self.memory = memory
        self.cpus = cpus
        self.builds = builds
        self.volumeBytes = volumeBytes
    }

    /// Refuses a volume that would take the app's volumes past its limit.
    public func check(volumeBytes use: UInt64, app: String) throws {
        let limit = volumeBytes ?? VolumeRecord.defaultAppLimit
        if use > limit {
            throw KbuildError(.tooLarge, "\(app)'s volumes would take \(formatMemory(use)); it may have \(formatMemory(limit)) (kbuild apps:limits \(app) --volumes SIZE); nothing was made")
        }
    }


    /// The app's limits (none set: no limits).
    public static func get(_ app: String, keg: Keg, refs: any RefStore) async throws -> AppLimits {
        guard let ref = try await refs.get(try Schema.limits(app)) else { return AppLimits() }
        return try await Records.get(AppLimits.self, ref.kid, from: keg, what: "app limits")
    }

    /// Refuses `use` (the formation's total, plus what one-off runs hold) when
    /// it is over the memory or CPU limit: a pure decision.
    public func check(use: Resources, app: String, what: String) throws {
        if let memory, use.memory > memory {
            throw KbuildError(.tooLarge, "\(what) needs \(use.memory >> 20) MiB of memory in all; \(app) may use \(memory >> 20) MiB (kbuild apps:limits \(app)); nothing changed")
        }
        if let cpus, use.cpus > cpus + 1e-9 {
            throw KbuildError(.tooLarge, "\(what) needs \(use.cpus) CPUs in all; \(app) may use \(cpus) (kbuild apps:limits \(app)); nothing changed")
        }
    }

    /// Refuses a push that would leave the app holding more than its Keg bytes.
    public func check(kegBytes use: UInt64, app: String) throws {
        if let kegBytes, use > kegBytes {
            throw KbuildError(.tooLarge, "\(app) would hold \(use >> 20) MiB of sources and images in the Keg; it may hold \(kegBytes >> 20) MiB (kbuild apps:limits \(app)); the push is refused")
        }
    }

    /// Refuses another build when the app has `queued` already.
    public func check(builds queued: Int, app: String) throws {
        if let builds, queued >= builds {
            throw KbuildError(.tooLarge, "\(app) has \(queued) build\(queued == 1 ? "" : "s") queued or running, its limit (kbuild apps:limits \(app)); push again when one is done")
        }
    }
}

/// What an app holds, for its limits.
public enum AppUsage {
    /// Bytes of its pushed sources (each tree once) and its images' layers and
    /// configs (each blob once), from the histories of `apps/APP/source` and
    /// `apps/APP/image`.
    public static func kegBytes(_ app: String, keg: Keg, refs: any RefStore) async throws -> UInt64 {
        var total: UInt64 = 0
        var trees = Set<KID>()
        for change in try await refs.history(try Schema.source(app), limit: nil) {
            guard let kid = change.new, let source = try? await Records.get(SourceRecord.self, kid, from: keg, what: "source"),
                  trees.insert(source.source).inserted else { continue }
            total += source.bytes
        }
        var blobs = Set<KID>()
        let images = ImageStore(keg: keg)
        for change in try await refs.history(try Schema.image(app), limit: nil) {
            guard let kid = change.new, let manifest = try? images.manifest(kid) else { continue }
            for d in [manifest.config] + manifest.layers {
                guard let blob = try? d.kid(), blobs.insert(blob).inserted else { continue }
                total += (try? keg.logicalSize(of: blob)) ?? 0
            }
        }
        return total
    }

    /// The builds of `app` queued or running now.
    public static func builds(_ app: String, keg: Keg, refs: any RefStore) async throws -> Int {
        try await BuildQueue(keg: keg, refs: refs).pending().filter { $0.job.app == app }.count
    }
}
