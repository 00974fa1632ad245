public import Hummingbird
public import Keg
public import RefStore
import KbuildCore
import Foundation
import HTTPTypes
import NIOPosix

/// The pull side of the OCI distribution API, served from the Keg: the
/// registry's blobs are Keg objects (a digest is a KID) and its tags are refs.
///
///     GET       /v2/                               API version check
///     GET HEAD  /v2/<name>/manifests/<tag|digest>  a manifest, by tag or digest
///     GET HEAD  /v2/<name>/blobs/<digest>          a config or layer, with Range
///     GET       /v2/<name>/tags/list               the repository's tags
///
/// Errors use the distribution spec's body, `{"errors":[{"code":…,"message":…}]}`.
public struct RegistryRoutes<Context: RequestContext>: Sendable {
    let keg: Keg
    let refs: any RefStore

    public init(keg: Keg, refs: any RefStore) {
        self.keg = keg
        self.refs = refs
    }

    public func register(on router: Router<Context>) {
        router.get("/v2") { _, _ in RegistryRoutes.versionCheck() }
        router.get("/v2/**") { request, _ in await self.serve(request, head: false) }
        router.head("/v2/**") { request, _ in await self.serve(request, head: true) }
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
        do {
            switch route {
            case .manifest(let name, let reference): return try await manifest(name: name, reference: reference, head: head)
            case .blob(let name, let digest): return try await blob(name: name, digest: digest, request: request, head: head)
            case .tags(let name): return try await tags(name: name)
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
            bytes = try await NIOThreadPool.singleton.runIfActive { [keg] in try keg.logicalBytes(kid, maxWhole: 4 << 20) }
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
        encoder.outputFormatting = [.withoutEscapingSlashes]
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

    init?(_ path: String) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 5, parts[0].isEmpty, parts[1] == "v2" else { return nil }
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
        return try RefName("registry/\(repository):\(tag)")
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
        let data = (try? JSONEncoder().encode(Body(errors: [Item(code: code, message: message)]))) ?? Data()
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[HTTPField.Name("Docker-Distribution-API-Version")!] = "registry/2.0"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
