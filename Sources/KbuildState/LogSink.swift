public import KbuildCore

/// Where a node that joined over the network sends its processes' logs: the
/// control plane keeps a copy of each log file (as Heroku's dynos send to
/// its log router), so `kbuild logs` reads every node's lines in one place,
/// and they outlive the node. Files are named as the agent names them
/// (`APP.TYPE.N-ID.log`).
public protocol LogSink: Sendable {
    /// Writes `bytes` at `offset` of the node's copy of `file`: a fresh copy
    /// when `offset` is 0, an append when it is the copy's size; any other
    /// offset writes nothing and answers the copy's size, to resume from.
    func appendLog(node: String, file: String, offset: UInt64, bytes: [UInt8]) async throws -> LogAppend
}

/// What the control plane did with a piece of a log.
public enum LogAppend: Sendable, Equatable, Codable {
    /// Written: the copy's size now.
    case stored(UInt64)
    /// Not written: the offset was not the copy's size, which is this.
    case mismatch(UInt64)
}

/// The rules for a shipped log file's name: the agent's own, nothing that could leave the node's log directory.
public enum ShippedLogName {
    public static func isValid(_ name: String) -> Bool {
        name.hasSuffix(".log") && name.utf8.count <= 200 && !name.hasPrefix(".") &&
            name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x2e || $0 == 0x5f }
    }
}

/// Where a build worker on another machine sends the log of the build it
/// runs, as it grows: the control plane keeps a copy that the pusher (and
/// `kbuild logs BUILD`) follow. Offsets work as `LogSink`'s do; only the
/// worker holding the build's claim may write it.
public protocol BuildLogSink: Sendable {
    func appendBuildLog(build: KID, offset: UInt64, bytes: [UInt8]) async throws -> LogAppend
}
