public import Hummingbird
import Keg
public import KbuildState
import KbuildCore
import Foundation
import HTTPTypes
import NIOPosix

/// The OCI distribution API, served from the Keg: the registry's blobs are
/// Keg objects (a digest is a KID) and its tags are refs.
///
///     GET       /v2/                               API version check
///     GET HEAD  /v2/<name>/manifests/<tag|digest>  a manifest, by tag or digest
///     PUT       /v2/<name>/manifests/<tag|digest>  store one (every blob it names must be here) and tag it
///     GET HEAD  /v2/<name>/blobs/<digest>          a config or layer, with Range
///     POST      /v2/<name>/blobs/uploads/          start an upload (?digest= monolithic, ?mount=&from= cross-repository)
///     PATCH     /v2/<name>/blobs/uploads/<id>      a chunk (Content-Range optional)
///     PUT       /v2/<name>/blobs/uploads/<id>      the last chunk, ?digest= checked before anything is stored
///     GET DELETE /v2/<name>/blobs/uploads/<id>     its progress; cancel it
///     GET       /v2/<name>/tags/list               the repository's tags
///
/// Errors use the distribution spec's body, `{"errors":[{"code":…,"message":…}]}`.
public struct RegistryRoutes<Context: RequestContext>: Sendable {
    let keg: Keg
    let refs: any RefStore
    let uploads: RegistryUploads
    /// What each repository may serve to a token limited to some apps.
    let reach: RegistryReach
    /// Largest manifest accepted (the spec suggests 4 MiB).
    static var manifestLimit: Int { Int(RegistryRoutesLimits.manifest) }

    init(keg: Keg, refs: any RefStore, uploads: RegistryUploads? = nil) {
        self.keg = keg
        self.refs = refs
        self.uploads = uploads ?? RegistryUploads(keg: keg)
        self.reach = RegistryReach(keg: keg, refs: refs)
    }

    public func register(on router: Router<Context>) {
        router.get("/v2") { _, _ in RegistryRoutes.versionCheck() }
        router.get("/v2/**") { request, _ in await self.serve(request, head: false) }
        router.head("/v2/**") { request, _ in await self.serve(request, head: true) }
        router.post("/v2/**") { request, _ in await self.write(request) }
        router.patch("/v2/**") { request, _ in await self.write(request) }
        router.put("/v2/**") { request, _ in await self.write(request) }
        router.delete("/v2/**") { request, _ in await self.write(request) }
    }

    /// POST, PATCH, PUT and DELETE: uploads and manifests.
    func write(_ request: Request) async -> Response {
        guard let route = RegistryPath(request.uri.path) else {
            return RegistryError.response(.notFound, "NAME_UNKNOWN", "no such registry path: \(request.uri.path)")
        }
        let query = request.uri.queryParameters
        do {
            switch (request.method, route) {
            case (.post, .uploads(let name)):
                if let mount = query.get("mount") {
                    let kid = try RegistryNames.kid(digest: mount)
                    if keg.contains(kid) { return created(name: name, kid: kid) }
                    // Not here: fall through to an ordinary upload, as the spec says.
                }
                let id = try await uploads.start(repository: name)
                if let digest = query.get("digest") {
                    let kid = try RegistryNames.kid(digest: digest)
                    _ = try await receive(request, into: id, repository: name)
                    let stored = try await uploads.finish(id, repository: name, digest: kid)
                    return created(name: name, kid: stored)
                }
                return accepted(name: name, id: id, size: 0)
            case (.patch, .upload(let name, let id)):
                let size = try await receive(request, into: id, repository: name)
                return accepted(name: name, id: id, size: size)
            case (.put, .upload(let name, let id)):
                guard let digest = query.get("digest") else {
                    throw RegistryError(.badRequest, "DIGEST_INVALID", "finishing an upload needs ?digest=sha256:…")
                }
                let kid = try RegistryNames.kid(digest: digest)
                _ = try await receive(request, into: id, repository: name)
                let stored = try await uploads.finish(id, repository: name, digest: kid)
                return created(name: name, kid: stored)
            case (.delete, .upload(let name, let id)):
                try await uploads.cancel(id, repository: name)
                return Response(status: .noContent)
            case (.put, .manifest(let name, let reference)):
                return try await putManifest(request, name: name, reference: reference)
            default:
                throw RegistryError(.methodNotAllowed, "UNSUPPORTED", "\(request.method) is not supported on \(request.uri.path)")
            }
        } catch let error as RegistryError {
            return error.response
        } catch {
            return RegistryError.response(.internalServerError, "UNKNOWN", "\(error)")
        }
    }

    /// Streams a request body into an upload; returns the upload's size after it.
    func receive(_ request: Request, into id: String, repository: String) async throws -> UInt64 {
        var offset: UInt64?
        if let range = request.headers[.contentRange] {
            guard let start = RegistryInput.uploadOffset(contentRange: range) else {
                throw RegistryError(.rangeNotSatisfiable, "BLOB_UPLOAD_INVALID", "unreadable Content-Range \(range.debugDescription)")
            }
            offset = start
        }
        var size = try await uploads.size(of: id, repository: repository)
        for try await buffer in request.body {
            size = try await uploads.append(id, repository: repository, bytes: Array(buffer.readableBytesView), at: offset)
            offset = nil
        }
        return size
    }

    func putManifest(_ request: Request, name: String, reference: String) async throws -> Response {
        if name.hasPrefix("stacks/") {
            throw RegistryError(.forbidden, "DENIED", "stacks are made with `kbuild stack create` or `kbuild stack import`, not pushed")
        }
        var body = [UInt8]()
        for try await buffer in request.body {
            body += buffer.readableBytesView
            guard body.count <= RegistryRoutes.manifestLimit else {
                throw RegistryError(.contentTooLarge, "MANIFEST_INVALID", "manifest is over \(RegistryRoutes.manifestLimit) bytes")
            }
        }
        let kid = KID(hashing: body)
        guard let descriptors = RegistryInput.manifestDescriptors(body) else {
            throw RegistryError(.badRequest, "MANIFEST_INVALID", "not an image manifest or index (schemaVersion 2 JSON)")
        }
        if reference.hasPrefix("sha256:"), try RegistryNames.kid(digest: reference) != kid {
            throw RegistryError(.badRequest, "DIGEST_INVALID", "manifest has digest \(kid.ociDigest), not \(reference)")
        }
        // Every blob and manifest it names must be here first, with the size its
        // descriptor says. (A pushed `dev.kbuild.tree` annotation is kept but never
        // trusted: what kbuild runs, stacks and releases, comes from images kbuild
        // made itself, never from a pushed manifest.)
        for descriptor in descriptors {
            guard let digest = descriptor.digest else { throw RegistryError(.badRequest, "MANIFEST_INVALID", "a descriptor has no digest") }
            let part = try RegistryNames.kid(digest: digest)
            guard keg.contains(part) else {
                throw RegistryError(.badRequest, "MANIFEST_BLOB_UNKNOWN", "the manifest names \(digest), which was not uploaded")
            }
            let stored = try keg.logicalSize(of: part)
            guard let size = descriptor.size, size >= 0, UInt64(size) == stored else {
                throw RegistryError(.badRequest, "SIZE_INVALID", "the descriptor of \(digest) says size \(descriptor.size.map(String.init) ?? "none"); it is \(stored) bytes")
            }

        }
        try keg.putBlob(body)
        if !reference.hasPrefix("sha256:") {
            _ = try await refs.compareAndSwap(try RegistryNames.tagRef(repository: name, tag: reference), to: kid, expecting: .any, actor: "registry")
        }
        var headers = HTTPFields()
        headers[.location] = "/v2/\(name)/manifests/\(kid.ociDigest)"
        headers[HTTPField.Name("Docker-Content-Digest")!] = kid.ociDigest
        return Response(status: .created, headers: headers)
    }

    func created(name: String, kid: KID) -> Response {
        var headers = HTTPFields()
        headers[.location] = "/v2/\(name)/blobs/\(kid.ociDigest)"
        headers[HTTPField.Name("Docker-Content-Digest")!] = kid.ociDigest
        headers[.contentLength] = "0"
        return Response(status: .created, headers: headers)
    }

    func accepted(name: String, id: String, size: UInt64) -> Response {
        var headers = HTTPFields()
        headers[.location] = "/v2/\(name)/blobs/uploads/\(id)"
        headers[HTTPField.Name("Docker-Upload-UUID")!] = id
        headers[.range] = "0-\(size == 0 ? 0 : size - 1)"
        headers[.contentLength] = "0"
        return Response(status: .accepted, headers: headers)
    }

    static func versionCheck() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[HTTPField.Name("Docker-Distribution-API-Version")!] = "registry/2.0"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "{}")))
    }

    func serve(_ request: Request, head: Bool) async -> Response {
        guard let route = RegistryPath(request.uri.path) else {
            return RegistryError.response(.notFound, "NAME_UNKNOWN", "no such registry path: \(request.uri.path)")
        }
        // A token limited to some apps reads only what its repository's tags
        // reach by descriptors (RegistryReach); the admin token reads any object.
        let limited = request.headers[TokenAuthMiddleware<Context>.scopeHeader] != nil
        do {
            switch route {
            case .manifest(let name, let reference):
                if limited, reference.hasPrefix("sha256:"), try await !reach.contains(try RegistryNames.kid(digest: reference), repository: name) {
                    throw RegistryError(.notFound, "MANIFEST_UNKNOWN", "manifest \(reference) is not in this registry")
                }
                return try await manifest(name: name, reference: reference, head: head)
            case .blob(let name, let digest):
                if limited, try await !reach.contains(try RegistryNames.kid(digest: digest), repository: name) {
                    throw RegistryError(.notFound, "BLOB_UNKNOWN", "blob \(digest) is not in this registry")
                }
                return try await blob(name: name, digest: digest, request: request, head: head)
            case .tags(let name): return try await tags(name: name)
            case .upload(let name, let id):
                return accepted(name: name, id: id, size: try await uploads.size(of: id, repository: name))
            case .uploads: throw RegistryError(.methodNotAllowed, "UNSUPPORTED", "start an upload with POST")
            }
        } catch let error as RegistryError {
            return error.response
        } catch {
            return RegistryError.response(.internalServerError, "UNKNOWN", "\(error)")
        }
    }

    func manifest(name: String, reference: String, head: Bool) async throws -> Response {
        let kid: KID
        if reference.hasPrefix("sha256:") {
            kid = try RegistryNames.kid(digest: reference)
        } else {
            let ref = try RegistryNames.tagRef(repository: name, tag: reference)
            guard let value = try await refs.get(ref) else {
                throw RegistryError(.notFound, "MANIFEST_UNKNOWN", "no tag \(reference) in repository \(name)")
            }
            kid = value.kid
        }
        let bytes: [UInt8]
        do {
            bytes = try await NIOThreadPool.singleton.runIfActive { [keg] in try keg.logicalBytes(kid, maxWhole: RegistryRoutesLimits.manifest) }
        } catch {
            throw RegistryError(.notFound, "MANIFEST_UNKNOWN", "manifest \(kid.ociDigest) is not in this registry")
        }
        let json = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
        guard let json, json["schemaVersion"] as? Int == 2 else {
            throw RegistryError(.notFound, "MANIFEST_UNKNOWN", "\(kid.ociDigest) is not a manifest")
        }
        var headers = HTTPFields()
        headers[.contentType] = json["mediaType"] as? String ?? "application/vnd.oci.image.manifest.v1+json"
        headers[.contentLength] = String(bytes.count)
        headers[.eTag] = "\"\(kid.ociDigest)\""
        headers[HTTPField.Name("Docker-Content-Digest")!] = kid.ociDigest
        headers[HTTPField.Name("Docker-Distribution-API-Version")!] = "registry/2.0"
        return Response(status: .ok, headers: headers, body: head ? .init() : .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    func blob(name: String, digest: String, request: Request, head: Bool) async throws -> Response {
        let kid = try RegistryNames.kid(digest: digest)
        let reader: ObjectReader
        do {
            reader = try await NIOThreadPool.singleton.runIfActive { [keg] in try ObjectReader(keg: keg, kid: kid) }
        } catch {
            throw RegistryError(.notFound, "BLOB_UNKNOWN", "blob \(digest) is not in this registry")
        }
        return KegRoutes<Context>.response(reader, request: request, head: head)
    }

    func tags(name: String) async throws -> Response {
        let tags = try await RegistryNames.tags(of: name, in: refs)
        guard !tags.isEmpty else { throw RegistryError(.notFound, "NAME_UNKNOWN", "no repository named \(name)") }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        let data = try encoder.encode(TagList(name: name, tags: tags))
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// The body of `tags/list`.
struct TagList: Codable {
    var name: String
    var tags: [String]
}

/// A parsed `/v2/…` path. Repository names have slashes, so it is read from the end.
enum RegistryPath: Equatable {
    case manifest(name: String, reference: String)
    case blob(name: String, digest: String)
    case tags(name: String)
    case uploads(name: String)
    case upload(name: String, id: String)

    init?(_ path: String) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 5, parts[0].isEmpty, parts[1] == "v2" else { return nil }
        if parts.count >= 6, parts[parts.count - 3] == "blobs", parts[parts.count - 2] == "uploads" {
            let name = parts[2..<(parts.count - 3)].joined(separator: "/")
            guard RegistryNames.isRepository(name) else { return nil }
            let id = parts[parts.count - 1]
            self = id.isEmpty ? .uploads(name: name) : .upload(name: name, id: id)
            return
        }
        if parts.count >= 5, parts[parts.count - 2] == "blobs", parts[parts.count - 1] == "uploads" {
            let name = parts[2..<(parts.count - 2)].joined(separator: "/")
            guard RegistryNames.isRepository(name) else { return nil }
            self = .uploads(name: name)
            return
        }
        let kind = parts[parts.count - 2], last = parts[parts.count - 1]
        let name = parts[2..<(parts.count - 2)].joined(separator: "/")
        guard RegistryNames.isRepository(name) else { return nil }
        switch kind {
        case "manifests": self = .manifest(name: name, reference: last)
        case "blobs": self = .blob(name: name, digest: last)
        case "tags" where last == "list": self = .tags(name: name)
        default: return nil
        }
    }
}

/// How registry names map to refs: a pure mapping, one place.
///
/// `stacks/NAME:latest` is the stack `NAME` (ref `stacks/NAME`); every other
/// `REPOSITORY:TAG` is the ref `registry/REPOSITORY:TAG`.
public enum RegistryNames {
    public static func tagRef(repository: String, tag: String) throws -> RefName {
        guard isRepository(repository) else { throw RegistryError(.badRequest, "NAME_INVALID", "invalid repository name \(repository.debugDescription)") }
        guard isTag(tag) else { throw RegistryError(.badRequest, "TAG_INVALID", "invalid tag \(tag.debugDescription)") }
        if repository.hasPrefix("stacks/"), tag == "latest", !repository.dropFirst(7).contains("/") {
            return try RefName(repository)
        }
        return try Schema.registryTag(repository, tag)
    }

    static func tags(of repository: String, in refs: any RefStore) async throws -> [String] {
        if repository.hasPrefix("stacks/"), !repository.dropFirst(7).contains("/"), isRepository(repository),
           try await refs.get(try RefName(repository)) != nil {
            return ["latest"]
        }
        guard isRepository(repository) else { return [] }
        let prefix = "registry/\(repository):"
        let under = (repository as NSString).deletingLastPathComponent
        let listed = try await refs.list(prefix: try RefName(under.isEmpty ? "registry" : "registry/" + under))
        return listed.compactMap { $0.name.rawValue.hasPrefix(prefix) ? String($0.name.rawValue.dropFirst(prefix.count)) : nil }.sorted()
    }

    static func kid(digest: String) throws -> KID {
        guard digest.hasPrefix("sha256:"), digest.utf8.count == 71, let kid = try? KID(parsing: "K-" + digest.dropFirst(7)) else {
            throw RegistryError(.badRequest, "DIGEST_INVALID", "invalid digest \(digest.debugDescription): kbuild takes sha256:<64 hex>")
        }
        return kid
    }

    /// The distribution spec's repository grammar: lowercase components joined by `/`.
    public static func isRepository(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 255 else { return false }
        return name.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { component in
            guard let first = component.first, let last = component.last, first.isLowercaseAlnum, last.isLowercaseAlnum else { return false }
            return component.allSatisfy { $0.isLowercaseAlnum || $0 == "." || $0 == "_" || $0 == "-" }
        }
    }

    public static func isTag(_ tag: String) -> Bool {
        guard let first = tag.first, tag.utf8.count <= 128, first.isLetterDigitOrUnderscore else { return false }
        return tag.allSatisfy { $0.isLetterDigitOrUnderscore || $0 == "." || $0 == "-" }
    }
}

extension Character {
    fileprivate var isLowercaseAlnum: Bool { ("a"..."z").contains(self) || ("0"..."9").contains(self) }
    fileprivate var isLetterDigitOrUnderscore: Bool { isLowercaseAlnum || ("A"..."Z").contains(self) || self == "_" }
}

/// A registry error: an HTTP status and the distribution spec's error code.
struct RegistryError: Error {
    var status: HTTPResponse.Status
    var code: String
    var message: String

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    var response: Response { RegistryError.response(status, code, message) }

    static func response(_ status: HTTPResponse.Status, _ code: String, _ message: String) -> Response {
        struct Item: Encodable { var code: String; var message: String }
        struct Body: Encodable { var errors: [Item] }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(Body(errors: [Item(code: code, message: message)]))) ?? Data()
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[HTTPField.Name("Docker-Distribution-API-Version")!] = "registry/2.0"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
