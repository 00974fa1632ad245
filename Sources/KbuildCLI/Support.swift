import ArgumentParser
import Foundation
import KbuildCore
import Keg
import KbuildState
import SQLiteState
import EtcdState

extension GlobalOptions {
    var dir: DataDir { DataDir.resolve(dataDir) }

    /// The Keg of this data dir; with the state on etcd, records are kept there too.
    func openKeg() throws -> Keg { try Keg(dataDir: dir, records: try etcdState().map { EtcdRecords(etcd: $0) }) }

    /// The ref store this data dir's `kbuild up` uses: etcd when it was started with `--state etcd://…`, else SQLite.
    func openRefs() throws -> any RefStore {
        try dir.create()
        if let etcd = try etcdState() { return EtcdRefStore(etcd: etcd) }
        return try SQLiteRefStore(path: dir.refStore.path)
    }

    /// The etcd this data dir's state is in (what its `kbuild up --state` remembered), or nil (SQLite).
    func etcdState() throws -> EtcdClient? {
        guard let remembered = try EtcdCluster.Remembered.read(dir), remembered.state.hasPrefix("etcd://") else { return nil }
        return try EtcdClient(remembered.state)
    }
}

/// Who the CLI says made a change: `$KBUILD_ACTOR`, else the login name.
var currentActor: String {
    let env = ProcessInfo.processInfo.environment
    if let actor = env["KBUILD_ACTOR"], !actor.isEmpty { return actor }
    return env["USER"] ?? env["LOGNAME"] ?? "uid:\(getuid())"
}

/// Human-readable byte counts (1000-based, as `du -h --si` and `ls` users expect for rates).
func formatBytes(_ n: UInt64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"]
    var v = Double(n)
    var i = 0
    while v >= 1000 && i < units.count - 1 { v /= 1000; i += 1 }
    return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
}

/// One progress line on stderr, rewritten in place, only when stderr is a terminal.
func progressLine(_ verb: String) -> KegProgress? {
    guard isatty(2) == 1 else { return nil }
    return KegProgress { s in
        let rate = s.elapsed > 0 ? UInt64(Double(s.bytes) / s.elapsed) : 0
        let line = "\r\(verb): \(s.files) files, \(formatBytes(s.bytes)), \(formatBytes(rate))/s   "
        FileHandle.standardError.write(Data(line.utf8))
    }
}

func endProgressLine(_ progress: KegProgress?) {
    if progress != nil { FileHandle.standardError.write(Data("\r\u{1b}[K".utf8)) }
}

/// Prints a value as pretty JSON with sorted keys.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Prints a line to stdout at once (unbuffered), for long-running commands.
func say(_ line: String) {
    writeOut(Array((line + "\n").utf8))
}

/// Writes to stdout; a reader that went away (`| head`) ends the command quietly, as it does for cat.
func writeOut(_ bytes: [UInt8]) {
    var done = 0
    while done < bytes.count {
        let n = bytes[done...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { exit(errno == EPIPE ? 0 : 1) }
        done += n
    }
}

/// The typed confirmation a destroying verb asks for: `--confirm NAME`, or
/// NAME typed on this terminal after `warning`; anything else stops it.
func confirmDestroy(_ name: String, given: String?, warning: String) throws {
    var answer = given
    if answer == nil {
        guard isatty(0) == 1 else { throw ValidationError("refusing to destroy \(name) without confirmation: pass --confirm \(name)") }
        FileHandle.standardError.write(Data(" !  \(warning) Type \(name) to confirm: ".utf8))
        answer = readLine()?.trimmingCharacters(in: .whitespaces)
    }
    guard answer == name else { throw ValidationError("confirmation \(answer.map { $0.debugDescription } ?? "none") does not match \(name); nothing was deleted") }
}
