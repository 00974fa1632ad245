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
