import Hummingbird
import Keg
import KbuildState
import Cluster
import Foundation
import GitGateway
import KbuildCore
import KbuildServer
import Releases
import Scheduler
import Sandbox
import NodeAgent
import HTTPTypes

/// Releases beyond the list: a route's `:version`, and the release phase's output and state.
extension APIRoutes {
    /// A scale makes a release that does not run the release phase: while the current
    /// release's has not succeeded, it would roll the release out without it.
    func refuseWhileReleasePhase(_ app: String, what: String) async throws {
        guard let current = try await releases.current(app), ReleasePhase.command(of: current.release) != nil else { return }
        if let ref = try await refs.get(try Schema.releasePhase(app)),
           let r = try? await Records.get(ReleasePhaseRecord.self, ref.kid, from: keg, what: "release phase"), r.release == current.kid, r.state != .running {
            return  // it ended: succeeded, or failed and reverted (the revert is current then)
        }
        throw KbuildError(.conflict, "\(app) v\(current.version)'s release command has not ended yet: \(what) when it has (kbuild releases:output \(app) v\(current.version))")
    }

    /// The `:version` of a route, `vN` or `N`.
    func version(_ c: Context) throws -> Int64 {
        let text = c.parameters.get("version") ?? ""
        guard let v = Int64(text.hasPrefix("v") ? String(text.dropFirst()) : text), v > 0 else {
            throw KbuildError(.invalidArgument, "invalid release \(text.debugQuoted): want vN, e.g. v3")
        }
        return v
    }

    /// The release phase of `version` (its newest run), with the last MiB of its output.
    func releaseOutput(_ app: String, version: Int64) async throws -> API.ReleaseOutput {
        let entry = try await releases.get(app, version: version)
        for change in try await refs.history(try Schema.releasePhase(app), limit: nil) {
            guard let kid = change.new else { continue }
            let r = try await Records.get(ReleasePhaseRecord.self, kid, from: keg, what: "release phase")
            guard r.release == entry.kid else { continue }
            var bytes: [UInt8] = []
            if let output = r.output {
                bytes = try keg.logicalBytes(output, maxWhole: UInt64(ReleasePhase.outputCap + 4096))
            } else if let live = r.liveLog, let handle = FileHandle(forReadingAtPath: live) {
                // Only the end of a live log is read.
                defer { try? handle.close() }
                let size = (try? handle.seekToEnd()) ?? 0
                try? handle.seek(toOffset: size > 1 << 20 ? size - (1 << 20) : 0)
                bytes = Array((try? handle.readToEnd()) ?? Data())
            }
            return API.ReleaseOutput(version: version, command: r.command, state: r.state.rawValue, node: r.node, exitStatus: r.exitStatus,
                                     reason: r.reason, output: String(decoding: bytes.suffix(1 << 20), as: UTF8.self),
                                     startedAt: r.startedAt, finishedAt: r.finishedAt)
        }
        let why = entry.release.processTypes[ReleasePhase.processType] == nil ? "its image has no release command"
            : entry.release.runsReleasePhase == true ? "its release phase has not started yet" : "it was not made by a deploy, config change or rollback"
        throw KbuildError(.notFound, "\(app) v\(version) has no release phase output: \(why)")
    }
}
