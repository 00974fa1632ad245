import KbuildCore
import Releases
public import Foundation
public import KbuildState

/// Heroku's release phase (Dokku's predeploy): a Procfile's `release:`
/// command runs once for each new release made by a deploy, a config change
/// or a rollback (not a scale or a revert), in that release's image with its
/// config and network, before any of its processes start. The scheduler
/// places it on a node as a `ReleaseTask` of the node's assignment, the node
/// agent runs it and writes a `ReleasePhaseRecord` (ref
/// `apps/APP/release-phase`, whose history keeps every run's output); only
/// after it succeeded does the release roll out. A failure (or running past
/// its timeout) reverts the app to the release that ran before, so nothing
/// that runs changes.
public enum ReleasePhase {
    /// The Procfile's process type that names the command.
    public static let processType = Release.releasePhaseType
    /// Config var: seconds the command may run (default 900).
    public static let timeoutVar = "RELEASE_PHASE_TIMEOUT"
    public static let defaultTimeout: TimeInterval = 900
    /// Output kept of one run (the rest is counted in a last line).
    public static let outputCap = 16 << 20


    /// The command `release` runs in its release phase, or nil when it has none to run.
    public static func command(of release: Release) -> String? {
        guard release.runsReleasePhase == true else { return nil }
        return release.processTypes[processType]
    }

    /// The timeout a config var asks for (bounded to 1 s … 24 h), else the default.
    public static func timeout(_ config: [String: String]) -> TimeInterval {
        guard let text = config[timeoutVar], let seconds = Double(text), seconds.isFinite else { return defaultTimeout }
        return min(max(seconds, 1), 86_400)
    }
}
