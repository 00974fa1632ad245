public import Hummingbird
public import Keg
import KbuildCore
import Foundation
import HTTPTypes
import NIOPosix

/// Objects by KID over HTTP, so node agents on other machines can pull what
/// they lack: `GET` and `HEAD /v1/objects/K-…`, with single byte ranges.
///
/// Headers: `Content-Length`, `ETag: "K-…"`, `Accept-Ranges: bytes`,
/// `Docker-Content-Digest: sha256:…` (the same number), and `Kbuild-Kind`
/// (blob, tree, file). Every byte sent has been verified against its hash.
///
/// A node's join token gets only the objects of the images its assignment
/// runs (`NodeReach`); anything else is 403.
///
/// A build worker on another machine sends what it made: `POST
/// /v1/objects/missing` says which objects are not here, and `PUT
/// /v1/objects/K-…` stores one, checked against its KID (the admin may too;
/// app and node tokens may not).
public struct KegRoutes<Context: RequestContext>: Sendable {
    let keg: Keg
    let reach: NodeReach?

    public init(keg: Keg, reach: NodeReach? = nil) {
        self.keg = keg
        self.reach = reach
    }

    public func register(on router: Router<Context>) {
        router.get("/v1/objects/:kid") { request, context in try await self.serve(request, context, head: false) }
        router.head("/v1/objects/:kid") { request, context in try await self.serve(request, context, head: true) }
        router.post("/v1/objects/missing") { request, _ in await self.missing(request) }
        router.put("/v1/objects/:kid") { request, context in await self.receive(request, context) }
    }

    /// Largest tree taken whole in memory, and largest file taken at all.
    static var maxTree: Int { 64 << 20 }
    static var maxFile: UInt64 { 16 << 30 }

    /// `POST /v1/objects/missing` with a JSON list of KIDs (at most 10,000): those this Keg lacks.
    func missing(_ request: Request) async -> Response {
        do {
            let body = try await request.body.collect(upTo: 1 << 20)
            guard let names = try? JSONDecoder().decode([String].self, from: Data(body.readableBytesView)), names.count <= 10_000 else {
                throw KbuildError(.invalidArgument, "the body must be a JSON list of at most 10,000 KIDs")
            }
            let kids = try names.map { try KID(parsing: $0) }
            let lacking = try await NIOThreadPool.singleton.runIfActive { [keg] in kids.filter { !keg.contains($0) }.map(\.description) }
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: Array(try JSONEncoder().encode(lacking)))))
        } catch {
            return ErrorBody.response(KbuildError.wrap(error))
        }
    }

    /// `PUT /v1/objects/KID` with `Kbuild-Kind`: what a build worker on
    /// another machine made. Nothing is kept before it is checked: a file's
    /// bytes must hash to the KID; a tree must be its canonical encoding and
    /// everything it names must be here already (so a tree here is always
    /// whole); an archive is sent as the name of its tree, and the tar made
    /// here must hash to the KID. Objects already here cost nothing.
    func receive(_ request: Request, _ context: Context) async -> Response {
        do {
            let kid = try KID(parsing: context.parameters.get("kid") ?? "")
            let worker = request.headers[TokenAuthMiddleware<Context>.workerHeader]
            let kind = request.headers[HTTPField.Name("Kbuild-Kind")!] ?? ""
            if keg.contains(kid) {
                _ = try? await request.body.collect(upTo: 0)
                return Response(status: .ok)
            }
            switch kind {
            case "tree":
                let body = try await collect(request, max: Self.maxTree, what: "tree \(kid.short)")
                if let worker { try reach?.charge(worker: worker, bytes: body.count) }
                try await NIOThreadPool.singleton.runIfActive { [keg] in
                    let tree = try Tree(decoding: body, kid: kid)
                    if let absent = tree.entries.first(where: { $0.kid.map { !keg.contains($0) } ?? false }) {
                        throw KbuildError(.conflict, "tree \(kid.short) names \(absent.kid!.short) (\(absent.nameString.debugQuoted)), which is not here: send it first")
                    }
                    let writer = keg.writer()
                    try keg.stage(kid, tree: tree, bytes: body, in: writer)
                    try writer.commit()
                }
            case "archive":
                let body = try await collect(request, max: 200, what: "archive \(kid.short)")
                let tree = try KID(parsing: String(decoding: body, as: UTF8.self))
                try await NIOThreadPool.singleton.runIfActive { [keg] in
                    guard keg.contains(tree) else { throw KbuildError(.conflict, "archive \(kid.short) is made from tree \(tree.short), which is not here: send it first") }
                    let made = try keg.putArchive(of: tree)
                    guard made.kid == kid else {
                        throw KbuildError(.invalidArgument, "the archive of tree \(tree.short) is \(made.kid.short), not \(kid.short)")
                    }
                }
            case "file", "blob":
                try await receiveFile(kid, request, worker: worker)
            default:
                throw KbuildError(.invalidArgument, "Kbuild-Kind must be tree, file, blob or archive, not \(kind.debugQuoted)")
            }
            return Response(status: .created)
        } catch {
            return ErrorBody.response(KbuildError.wrap(error))
        }
    }

    private func collect(_ request: Request, max: Int, what: String) async throws -> [UInt8] {
        do {
            return Array(buffer: try await request.body.collect(upTo: max))
        } catch {
            throw KbuildError(.tooLarge, "failed to take \(what): it is over \(max) bytes")
        }
    }

    /// A file streams to the Keg's tmp dir (counted against the worker as it comes), then is stored if it hashes to its KID.
    private func receiveFile(_ kid: KID, _ request: Request, worker: String?) async throws {
        let path = keg.dataDir.kegTmp.appendingPathComponent("push-\(getpid())-\(UInt64.random(in: 0...UInt64.max))-\(kid.hex.prefix(16))").path
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KbuildError.syscall("open", path, verb: "take \(kid.short)") }
        defer { unlink(path) }
        do {
            defer { close(fd) }
            var total: UInt64 = 0
            for try await buffer in request.body {
                total += UInt64(buffer.readableBytes)
                guard total <= Self.maxFile else { throw KbuildError(.tooLarge, "failed to take \(kid.short): it is over \(Self.maxFile >> 30) GiB") }
                if let worker { try reach?.charge(worker: worker, bytes: buffer.readableBytes) }
                let ok = try await NIOThreadPool.singleton.runIfActive { buffer.withUnsafeReadableBytes { Keg.writeAll(fd, $0) } }
                guard ok else { throw KbuildError.syscall("write", path, verb: "take \(kid.short)") }
            }
        }
        try await NIOThreadPool.singleton.runIfActive { [keg] in
            let writer = keg.writer()
            do {
                try keg.stage(fileAt: path, expecting: kid, in: writer)
            } catch let error as KbuildError where error.code == .corrupt {
                throw KbuildError(.invalidArgument, "refused \(kid.short): \(error.message)")
            }
            try writer.commit()
        }
    }

    func serve(_ request: Request, _ context: Context, head: Bool) async throws -> Response {
        let text = context.parameters.get("kid") ?? ""
        let reader: ObjectReader
        do {
            let kid = try KID(parsing: text)
            if let node = request.headers[TokenAuthMiddleware<Context>.nodeHeader] {
                guard let reach, try await reach.reach(node).objects.contains(kid) else {
                    throw KbuildError(.forbidden, "node \(node) may not read \(kid.short): no image it is assigned holds it")
                }
            }
            // Disk reads and decompression run on the blocking-I/O pool, not the
            // cooperative threads that serve every other request.
            reader = try await NIOThreadPool.singleton.runIfActive { [keg] in try ObjectReader(keg: keg, kid: kid) }
        } catch {
            return ErrorBody.response(KbuildError.wrap(error))
        }
        return KegRoutes.response(reader, request: request, head: head)
    }

    /// An object's bytes (or the range asked for), streamed from the blocking-I/O pool.
    static func response(_ reader: ObjectReader, request: Request, head: Bool,
                         contentType: String = "application/octet-stream") -> Response {
        var headers = HTTPFields()
        headers[.contentType] = contentType
        headers[.eTag] = "\"\(reader.kid)\""
        headers[.acceptRanges] = "bytes"
        headers[HTTPField.Name("Docker-Content-Digest")!] = reader.kid.ociDigest
        headers[HTTPField.Name("Kbuild-Kind")!] = reader.kind.description

        var range = 0..<reader.size
        var status = HTTPResponse.Status.ok
        switch ByteRangeRequest.parse(request.headers[.range], size: reader.size) {
        case .whole: break
        case .partial(let r):
            range = r
            status = .partialContent
            headers[.contentRange] = "bytes \(r.lowerBound)-\(r.upperBound - 1)/\(reader.size)"
        case .unsatisfiable:
            var extra = HTTPFields()
            extra[.contentRange] = "bytes */\(reader.size)"
            return ErrorBody.response(KbuildError(.unsatisfiable, "failed to read \(reader.kid): range \(request.headers[.range] ?? "") is beyond the end (\(reader.size) bytes)"), headers: extra)
        }
        headers[.contentLength] = String(range.count)
        if head { return Response(status: status, headers: headers, body: .init()) }
        let span = range
        let body = ResponseBody(contentLength: Int(span.count)) { writer in
            var at = span.lowerBound
            while at < span.upperBound {
                let offset = at
                let piece = try await NIOThreadPool.singleton.runIfActive {
                    try reader.read(at: offset, maxLength: Int(min(span.upperBound - offset, 1 << 20)))
                }
                guard !piece.isEmpty else { break }
                try await writer.write(ByteBuffer(bytes: piece))
                at += UInt64(piece.count)
            }
            try await writer.finish(nil)
        }
        return Response(status: status, headers: headers, body: body)
    }
}
