import Hummingbird
import KbuildCore
import KbuildServer
import KbuildState
import Foundation
import NIOPosix

/// The control plane's copies of the logs of nodes that joined over the
/// network (`LogSink`): `PUT /api/v1/nodes/NODE/logs/FILE?offset=N` writes
/// into the node's log directory here, where `kbuild logs` reads every
/// node's files. A node's join token writes its own node's files only, and
/// starts a file only for a process or release phase of its assignment (so
/// it cannot put lines into another app's logs); each copy stays under
/// `maxFile`. The node caps its own files; a copy is never cut here (that
/// would move the offsets the node resumes from): past `maxPerNode`, the
/// node's oldest copies go whole.
struct NodeLogRoutes<Context: RequestContext>: Sendable {
    /// The log directory of a node, on this machine.
    let directory: @Sendable (String) -> String
    let reach: NodeReach
    static var maxPiece: Int { 1 << 20 }
    static var maxFile: UInt64 { 256 << 20 }
    static var maxPerNode: UInt64 { 4 << 30 }

    func register(on router: Router<Context>) {
        router.put("\(API.prefix)/nodes/:node/logs/:file") { r, c in
            do {
                let node = c.parameters.get("node") ?? "", file = c.parameters.get("file") ?? ""
                if let acting = r.headers[TokenAuthMiddleware<Context>.nodeHeader], acting != node {
                    throw KbuildError(.forbidden, "node \(acting) may not write node \(node)'s logs")
                }
                guard Names.isAppName(node) else { throw KbuildError(.invalidArgument, "invalid node name \(node.debugQuoted)") }
                guard ShippedLogName.isValid(file) else {
                    throw KbuildError(.invalidArgument, "invalid log file name \(file.debugQuoted): a-z, 0-9, '-', '_' and '.', ending in .log")
                }
                if let acting = r.headers[TokenAuthMiddleware<Context>.nodeHeader] {
                    let id = String(file.dropLast(4))
                    let assignment = try await reach.reach(acting).assignment
                    let assigned = (assignment?.processes.contains { $0.id == id } ?? false) || (assignment?.tasks?.contains { $0.id == id } ?? false)
                    guard assigned || FileManager.default.fileExists(atPath: directory(node) + "/" + file) else {
                        throw KbuildError(.forbidden, "node \(acting) may start a log only for a process of its assignment, not \(file)")
                    }
                }
                let (offset, bytes) = try await LogCopy.piece(of: r, max: Self.maxPiece, what: file)
                return try LogCopy.response(try await NIOThreadPool.singleton.runIfActive {
                    try self.write(node: node, file: file, offset: offset, bytes: bytes)
                })
            } catch {
                return ErrorBody.response(KbuildError.wrap(error))
            }
        }
    }

    /// Removes the oldest copies (by last write) while the directory is over `maxPerNode`, never `keeping`.
    static func holdToCap(_ dir: String, keeping: String) {
        var files: [(name: String, size: UInt64, modified: Date)] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            guard let attrs = try? FileManager.default.attributesOfItem(atPath: dir + "/" + name) else { continue }
            files.append((name, (attrs[.size] as? UInt64) ?? 0, (attrs[.modificationDate] as? Date) ?? .distantPast))
        }
        var total = files.reduce(0) { $0 + $1.size }
        for f in files.sorted(by: { $0.modified < $1.modified }) where total > maxPerNode && f.name != keeping {
            if unlink(dir + "/" + f.name) == 0 { total -= f.size }
        }
    }

    /// The write itself (blocking file I/O: called off the cooperative threads).
    func write(node: String, file: String, offset: UInt64, bytes: [UInt8]) throws -> LogAppend {
        let dir = directory(node)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let result = try LogCopy.write(dir + "/" + file, offset: offset, bytes: bytes, max: Self.maxFile, what: "node \(node)'s log")
        // A new copy, and each 16 MiB a copy grows: the node's directory is held to its cap, oldest copies first.
        let step: UInt64 = 16 << 20
        if case .stored = result, offset == 0 || offset / step != (offset + UInt64(bytes.count)) / step { Self.holdToCap(dir, keeping: file) }
        return result
    }
}

/// A copy of a log that another machine appends to: a fresh copy at offset 0,
/// an append at its size, nothing (and its size, to resume from) at any other.
enum LogCopy {
    /// A request's `offset=N` and its body (one piece, at most `max` bytes).
    static func piece(of r: Request, max: Int, what: String) async throws -> (offset: UInt64, bytes: [UInt8]) {
        guard let text = r.uri.queryParameters.get("offset"), let offset = UInt64(text) else {
            throw KbuildError(.invalidArgument, "missing or invalid offset=BYTES")
        }
        do {
            return (offset, Array(buffer: try await r.body.collect(upTo: max)))
        } catch {
            throw KbuildError(.tooLarge, "failed to store a piece of \(what): it is over \(max >> 20) MiB")
        }
    }

    /// What was done with a piece, as JSON.
    static func response(_ result: LogAppend) throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: Array(try JSONEncoder().encode(result)))))
    }

    /// Blocking file I/O: call it off the cooperative threads.
    static func write(_ path: String, offset: UInt64, bytes: [UInt8], max: UInt64, what: String) throws -> LogAppend {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw KbuildError.syscall("open", path, verb: "store \(what)") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw KbuildError.syscall("fstat", path, verb: "store \(what)") }
        let size = UInt64(st.st_size)
        if offset != 0 && offset != size { return .mismatch(size) }
        guard offset + UInt64(bytes.count) <= max else {
            throw KbuildError(.tooLarge, "failed to store \(what): the copy would pass \(max >> 20) MiB")
        }
        if offset == 0 && ftruncate(fd, 0) != 0 { throw KbuildError.syscall("ftruncate", path, verb: "store \(what)") }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + written, bytes.count - written, off_t(offset) + off_t(written)) }
            guard n > 0 else { throw KbuildError.syscall("pwrite", path, verb: "store \(what)") }
            written += n
        }
        return .stored(offset + UInt64(bytes.count))
    }
}
