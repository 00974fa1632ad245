import Foundation
import KbuildCore
import Sandbox
import KbuildState

/// What an agent writes down about each process it started, in
/// `<state-dir>/processes/ID.json`, so that the next agent (after a restart
/// or a crash) finds the process again instead of starting a second one.
struct ProcessFile: Codable, Sendable {
    var assigned: AssignedProcess
    var helperPID: Int32
    var pid: Int32
    var startTime: UInt64
    var cgroupDirectories: [String]
    var port: Int
    var process: KID
    var startedAt: Date
    var restarts: Int
    var log: String
    /// Its network namespace, when it has one of its own.
    var link: EgressNetwork.Link?

    static func directory(_ stateDir: String) -> String { stateDir + "/processes" }
    static func path(_ stateDir: String, id: String) -> String { directory(stateDir) + "/\(id).json" }

    func write(to stateDir: String) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = .sortedKeys
        let path = ProcessFile.path(stateDir, id: assigned.id)
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    static func remove(_ stateDir: String, id: String) {
        unlink(path(stateDir, id: id))
    }

    /// Every file, skipping (and reporting) ones that do not decode.
    static func readAll(_ stateDir: String, log: (String) -> Void) -> [ProcessFile] {
        let dir = directory(stateDir)
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        var out: [ProcessFile] = []
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() where name.hasSuffix(".json") {
            do {
                out.append(try decoder.decode(ProcessFile.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))))
            } catch {
                log("agent: skipping \(dir)/\(name): \(error)")
                unlink(dir + "/" + name)
            }
        }
        return out
    }
}
