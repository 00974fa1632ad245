public import Foundation
public import KbuildCore
public import Keg
public import AsyncHTTPClient
import NIOCore
import NIOPosix
import NIOFoundationCompat

/// Pulls what a Keg lacks from another host's Keg over HTTP (`GET
/// /v1/objects/K-…`), the way a node agent fetches an image it is told to
/// run: a tree and everything under it that is not here yet, each object
/// verified against its KID before it is stored, all committed at once.
/// Large files stream to a temporary file and are chunked here, as `put` does.
public struct KegRemote: Sendable {
    public let baseURL: URL
    let token: String
    let client: HTTPClient

    /// Trees and small blobs are held in memory up to this size; files stream to disk.
    static let inMemoryLimit = 256 << 20

    public init(baseURL: URL, token: String, client: HTTPClient = .shared) {
        self.baseURL = baseURL
        self.token = token
        self.client = client
    }

    public struct Report: Sendable {
        public var fetched = 0
        public var bytes: UInt64 = 0
        public var alreadyPresent = 0
    }

    /// Pulls `kid` and, for a tree, every object under it that `keg` lacks.
    public func pull(_ kid: KID, into keg: Keg) async throws -> Report {
        var report = Report()
        let writer = keg.writer()
        try await fetch(kid, as: nil, into: keg, writer: writer, report: &report)
        try writer.commit()
        return report
    }

    /// `role` is what the parent named the object as ("tree" or "file"); the
    /// root is read as the server's `Kbuild-Kind` says. Bytes are interpreted
    /// by role, since one KID may be both a file's bytes and a tree's.
    private func fetch(_ kid: KID, as role: String?, into keg: Keg, writer: KegWriter, report: inout Report) async throws {
        if writer.has(kid) {
            report.alreadyPresent += 1
            return
        }
        var request = HTTPClientRequest(url: baseURL.appendingPathComponent("v1/objects/\(kid)").absoluteString)
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: .seconds(300))
        } catch {
            throw KbuildError(.io, "failed to pull \(kid) from \(baseURL.absoluteString): \(error)")
        }
        let status = Int(response.status.code)
        guard status == 200 else {
            let body = (try? await response.body.collect(upTo: 4096)).map { String(buffer: $0) } ?? ""
            let code: KbuildError.Code = status == 404 ? .notFound : (status == 401 || status == 403) ? .unauthorized : .io
            throw KbuildError(code, "failed to pull \(kid) from \(baseURL.absoluteString): HTTP \(status) \(body.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        report.fetched += 1
        let served = response.headers.first(name: "Kbuild-Kind") ?? "blob"
        switch role ?? served {
        case "tree":
            let body = try await collect(response, kid: kid)
            report.bytes += UInt64(body.count)
            let tree = try Tree(decoding: body, kid: kid)
            for entry in tree.entries {
                if let child = entry.kid {
                    try await fetch(child, as: entry.type == .directory ? "tree" : "file", into: keg, writer: writer, report: &report)
                }
            }
            try keg.stage(kid, tree: tree, bytes: body, in: writer)
        case "file" where served == "file" || served == "archive", "archive":
            // A tree archive arrives as its bytes and is stored as a file here.
            report.bytes += try await streamToKeg(response, kid: kid, keg: keg, writer: writer)
        case "blob", "file":
            let body = try await collect(response, kid: kid)
            report.bytes += UInt64(body.count)
            try keg.stage(kid, file: body, in: writer)
        case let other:
            throw KbuildError(.corrupt, "failed to pull \(kid) from \(baseURL.absoluteString): unknown kind \(other.debugQuoted)")
        }
    }

    /// The whole body, checked against the KID before anything in it is trusted.
    private func collect(_ response: HTTPClientResponse, kid: KID) async throws -> [UInt8] {
        let body: [UInt8]
        do {
            body = Array(try await response.body.collect(upTo: KegRemote.inMemoryLimit).readableBytesView)
        } catch {
            throw KbuildError(.io, "failed to pull \(kid) from \(baseURL.absoluteString): \(error)")
        }
        guard KID(hashing: body) == kid else {
            throw KbuildError(.corrupt, "failed to pull \(kid) from \(baseURL.absoluteString): the bytes received do not hash to it")
        }
        return body
    }

    /// Streams a large file into the Keg's tmp dir, then stores it (which checks its KID).
    private func streamToKeg(_ response: HTTPClientResponse, kid: KID, keg: Keg, writer: KegWriter) async throws -> UInt64 {
        let path = keg.dataDir.kegTmp.appendingPathComponent("pull-\(getpid())-\(UInt64.random(in: 0...UInt64.max))-\(kid.hex.prefix(16))").path
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KbuildError.syscall("open", path, verb: "pull \(kid)") }
        defer { unlink(path) }
        var total: UInt64 = 0
        do {
            defer { close(fd) }
            for try await buffer in response.body {
                let ok = buffer.withUnsafeReadableBytes { Keg.writeAll(fd, $0) }
                guard ok else { throw KbuildError.syscall("write", path, verb: "pull \(kid)") }
                total += UInt64(buffer.readableBytes)
            }
        } catch let error as KbuildError {
            throw error
        } catch {
            throw KbuildError(.io, "failed to pull \(kid) from \(baseURL.absoluteString): \(error)")
        }
        try keg.stage(fileAt: path, expecting: kid, in: writer)
        return total
    }
}

extension KegRemote: KegUpstream {
    public func fetch(_ kid: KID, into keg: Keg) async throws {
        if !keg.contains(kid) { _ = try await pull(kid, into: keg) }
    }

    /// Sends what the other Keg lacks of `roots`, children before the tree
    /// that names them (the server takes a tree only once everything under it
    /// is there, so a tree it holds is whole and is not walked). A tree
    /// archive goes as the name of its tree: the server makes the tar and
    /// checks it hashes to the KID. Each file streams from this Keg.
    public func publish(_ roots: [KID], from keg: Keg) async throws {
        var present = Set<KID>()
        try await send(roots, from: keg, present: &present)
    }

    /// Sends each of `kids` the other Keg lacks; `present` holds what is known to be there (asked or sent).
    private func send(_ kids: [KID], from keg: Keg, present: inout Set<KID>) async throws {
        var asking: [KID] = []
        var queued = Set<KID>()
        for kid in kids where !present.contains(kid) && queued.insert(kid).inserted { asking.append(kid) }
        for batch in stride(from: 0, to: asking.count, by: 5000).map({ Array(asking[$0..<min(asking.count, $0 + 5000)]) }) {
            let lacking = Set(try await missing(batch))
            for kid in batch where !lacking.contains(kid) { present.insert(kid) }
            for kid in batch where lacking.contains(kid) && !present.contains(kid) {
                let (kind, archived) = try await NIOThreadPool.singleton.runIfActive { try keg.storedKind(kid) }
                switch kind {
                case .tree:
                    let bytes = try await NIOThreadPool.singleton.runIfActive { try keg.logicalBytes(kid) }
                    try await send(try Tree(decoding: bytes, kid: kid).entries.compactMap(\.kid), from: keg, present: &present)
                    try await put(kid, kind: "tree", body: .bytes(ByteBuffer(bytes: bytes)))
                case .treeArchive:
                    guard let tree = archived else { throw KbuildError(.corrupt, "archive \(kid) names no tree") }
                    try await send([tree], from: keg, present: &present)
                    try await put(kid, kind: "archive", body: .bytes(ByteBuffer(string: tree.description)))
                case .blob, .chunkedFile:
                    try await put(kid, kind: "file", body: .stream(try await NIOThreadPool.singleton.runIfActive { try ObjectReader(keg: keg, kid: kid) }))
                case .chunkIndex:
                    throw KbuildError(.invalidArgument, "failed to publish \(kid): a chunk index is part of a file, not an object of its own")
                }
                present.insert(kid)
            }
        }
    }

    enum Body {
        case bytes(ByteBuffer)
        case stream(ObjectReader)
    }

    /// Which of `kids` the other Keg lacks (`POST /v1/objects/missing`).
    func missing(_ kids: [KID]) async throws -> [KID] {
        guard !kids.isEmpty else { return [] }
        var request = HTTPClientRequest(url: baseURL.appendingPathComponent("v1/objects/missing").absoluteString)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(kids.map(\.description))))
        let response = try await execute(request, what: "ask \(baseURL.absoluteString) which objects it lacks")
        let body = try await response.body.collect(upTo: 1 << 20)
        guard let names = try? JSONDecoder().decode([String].self, from: Data(buffer: body)) else {
            throw KbuildError(.corrupt, "failed to read \(baseURL.absoluteString)'s list of missing objects")
        }
        let asked = Set(kids)
        return try names.map { name in
            let kid = try KID(parsing: name)
            guard asked.contains(kid) else { throw KbuildError(.corrupt, "\(baseURL.absoluteString) named \(kid.short) missing, which was not asked") }
            return kid
        }
    }

    /// `PUT /v1/objects/KID` with `Kbuild-Kind`: the server checks the bytes against the KID before it keeps them.
    private func put(_ kid: KID, kind: String, body: Body) async throws {
        var request = HTTPClientRequest(url: baseURL.appendingPathComponent("v1/objects/\(kid)").absoluteString)
        request.method = .PUT
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Kbuild-Kind", value: kind)
        switch body {
        case .bytes(let buffer):
            request.body = .bytes(buffer)
        case .stream(let reader):
            let size = reader.size
            let chunks = ObjectPieces(reader: reader)
            request.body = .stream(chunks, length: .known(Int64(size)))
        }
        let response = try await execute(request, what: "publish \(kid.short) to \(baseURL.absoluteString)")
        _ = try? await response.body.collect(upTo: 1 << 16)
    }

    private func execute(_ request: HTTPClientRequest, what: String) async throws -> HTTPClientResponse {
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: .seconds(600))
        } catch {
            throw KbuildError(.io, "failed to \(what): \(error)")
        }
        let status = Int(response.status.code)
        guard status == 200 || status == 201 else {
            let body = (try? await response.body.collect(upTo: 4096)).map { String(buffer: $0) } ?? ""
            let code: KbuildError.Code = status == 404 ? .notFound : (status == 401 || status == 403) ? .unauthorized : status == 409 ? .conflict : .io
            throw KbuildError(code, "failed to \(what): HTTP \(status) \(body.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return response
    }
}

/// An object's bytes as the request body pulls them, 1 MiB at a time, each
/// piece read (and verified) on the blocking-I/O pool when it is asked for.
struct ObjectPieces: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let reader: ObjectReader

    struct AsyncIterator: AsyncIteratorProtocol {
        let reader: ObjectReader
        var offset: UInt64 = 0

        mutating func next() async throws -> ByteBuffer? {
            guard offset < reader.size else { return nil }
            let (reader, at) = (self.reader, offset)
            let piece = try await NIOThreadPool.singleton.runIfActive { try reader.read(at: at, maxLength: 1 << 20) }
            guard !piece.isEmpty else { return nil }
            offset += UInt64(piece.count)
            return ByteBuffer(bytes: piece)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(reader: reader) }
}
