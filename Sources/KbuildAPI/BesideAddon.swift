import Hummingbird
import CKbuild
import Foundation
import KbuildCore
import KbuildState
import Keg
import NodeAgent
import Sandbox
import Synchronization

extension APIRoutes {
    /// Runs `script` beside an add-on: a one-off of its app on this server (its image, its config, a network of its own
    /// that reaches the add-on), `input` (a Keg object) on its stdin, its stdout to `output`. Returns its exit status and
    /// the end of its stderr.
    /// `disk`: the size of its writable root (a tmpfs; default 1G), `memory` its memory limit (which that counts in).
    func besideAddon(_ addon: AddonRecord, script: String, input: KID? = nil, disk: UInt64 = 1 << 30, memory: UInt64 = 512 << 20,
                     output: @escaping @Sendable ([UInt8]) throws -> Void) async throws -> (status: Int32, stderr: String) {
        guard let sandbox else { throw KbuildError(.unsatisfiable, "this kbuild runs no processes (no sandbox)") }
        guard let current = try await releases.current(addon.name) else { throw KbuildError(.notFound, "add-on \(addon.name) has no release") }
        let launch = try await ProcessLaunch.prepare(release: current.kid, image: current.release.image, config: current.release.config, app: addon.name,
                                                     name: "backup.1", id: "\(addon.name).backup.\(UInt32.random(in: 0...UInt32.max))", port: nil, reader: reader, images: keg, remote: nil)
        let held = try await egress?.makeHeld()
        var stdinRead: Int32 = -1
        var feeder: Thread?
        do {
            if let held { try await egress?.grant(held.link, current.release.reaches ?? []) }
            if let input {
                var fds: [Int32] = [-1, -1]
                guard kb_pipe_cloexec(&fds) == 0 else { throw KbuildError.syscall("pipe2", "a backup's input", verb: "restore") }
                stdinRead = fds[0]
                let write = fds[1]
                let reader = try ObjectReader(keg: keg, kid: input)
                // Fed on a thread of its own (a write to a full pipe blocks); a reader that exits early ends it (EPIPE).
                feeder = Thread {
                    defer { close(write) }
                    try? reader.forEachPiece { piece in
                        try piece.withUnsafeBytes { buffer in
                            var done = 0
                            while done < buffer.count {
                                let n = Glibc.write(write, buffer.baseAddress! + done, buffer.count - done)
                                if n < 0 && errno == EINTR { continue }
                                guard n > 0 else { throw KbuildError.syscall("write", "a backup's input", verb: "restore") }
                                done += n
                            }
                        }
                    }
                }
                feeder?.start()
            }
            let spec = SandboxSpec(command: ["/bin/sh", "-c", script], lowerDirs: launch.lowerDirs, environment: launch.environment,
                                   workingDirectory: "/", hostname: "backup", mounts: held != nil ? EgressNetwork.hostFiles() : [],
                                   network: held.map { .namespace("/run/netns/" + $0.link.namespace) } ?? .none,
                                   limits: SandboxLimits(memory: memory, pids: 256, cpus: 1, timeout: .seconds(6 * 3600), upperSize: disk),
                                   stdin: stdinRead >= 0 ? .fd(stdinRead) : .null)
            let errors = Mutex<[UInt8]>([])
            let failed = Mutex<(any Error)?>(nil)
            let result = try await sandbox.run(spec) { stream, bytes in
                if stream == .stderr {
                    errors.withLock { $0 = Array(($0 + bytes).suffix(16 << 10)) }
                } else if failed.withLock({ $0 == nil }) {
                    do { try output(bytes) } catch { failed.withLock { $0 = error } }
                }
            }
            if stdinRead >= 0 { close(stdinRead); stdinRead = -1 }
            if let held { await egress?.remove(held) }
            if let error = failed.withLock({ $0 }) { throw error }
            let text = String(decoding: errors.withLock { $0 }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return (result.exitStatus, text.isEmpty ? result.summary : text)
        } catch {
            if stdinRead >= 0 { close(stdinRead) }
            if let held { await egress?.remove(held) }
            throw error
        }
    }
}

/// A `KegUpload` fed from the sandbox's output callback (one caller at a time, under the lock).
final class UploadBox: @unchecked Sendable {
    private let value: KegUpload
    private let lock = Mutex<Void>(())
    init(_ value: KegUpload) { self.value = value }

    func append(_ bytes: [UInt8]) throws {
        try lock.withLock { _ in try bytes.withUnsafeBytes { try value.append($0) } }
    }

    /// Sealed and committed: its KID and size.
    func commit() throws -> (KID, UInt64) {
        try lock.withLock { _ in
            let kid = try value.seal()
            try value.commit()
            return (kid, value.size)
        }
    }

    func abort() { lock.withLock { _ in value.abort() } }
}

/// Names something is being done to, one at a time each (an add-on's backups, restores and upgrade).
final class BusyNames: Sendable {
    private let names = Mutex<[String: String]>([:])

    func contains(_ name: String) -> Bool { names.withLock { $0[name] != nil } }

    /// Runs `body` holding `name`; refused with what holds it when something else does.
    func holding<T: Sendable>(_ name: String, doing what: String, _ body: () async throws -> T) async throws -> T {
        try names.withLock { held in
            if let other = held[name] { throw KbuildError(.conflict, "\(other) of \(name) is running: try again once it is done; nothing changed") }
            held[name] = what
        }
        defer { names.withLock { _ = $0.removeValue(forKey: name) } }
        return try await body()
    }
}
