public import Hummingbird
public import KbuildCore
public import KbuildServer
import Foundation
import HTTPTypes
import KbuildClient
import KbuildState
import NIOCore
import NIOFoundationCompat
import HummingbirdCore

/// The dashboard: every node, app, release, build and process in a browser,
/// served by `kbuild up` at `/` on the API port. It is one more client of
/// the API: each page asks `/api/v1` with the token its session was made
/// from (`KbuildClient`, over this host's loopback), so it shows and does
/// exactly what that token may through the CLI, and nothing works only here.
/// Pages are HTML made on the server (`HTML` escapes every value), live
/// through one server-sent event stream per tab (`/events`, the API's
/// `/api/v1/events`), and readable at any past revision (`?at=N`).
public struct Dashboard: Sendable {
    let keys: SessionKeys
    /// The plain API's base URL on this host, once it is bound.
    let apiBase: @Sendable () -> String?

    public init(dataDir: DataDir, apiBase: @escaping @Sendable () -> String?) throws {
        keys = try SessionKeys.loadOrCreate(path: dataDir.root.appendingPathComponent("dashboard.key").path)
        self.apiBase = apiBase
    }

    /// The session middleware, for the plain or the TLS listener (whose cookies are `Secure`).
    public func middleware(tls: Bool) -> KbuildHTTP.Front { SessionMiddleware(keys: keys, tls: tls) }

    public func register(on router: Router<BasicRequestContext>) {
        registerLogin(on: router)
        router.get("/static/kbuild.css") { _, _ in Assets.response(Assets.css, type: "text/css; charset=utf-8") }
        router.get("/static/kbuild.js") { _, _ in Assets.response(Assets.js, type: "text/javascript; charset=utf-8") }
        router.get("/events") { r, _ in await self.events(r) }
        router.get("/") { r, _ in await self.page(r) { try await Overview.render($0) } }
        router.get("/builds") { r, _ in await self.page(r) { try await BuildsPage.list($0) } }
        router.get("/nodes") { r, _ in await self.page(r) { try await NodesPage.render($0) } }
        router.get("/trace") { r, _ in await self.page(r) { try await TracePage.render($0) } }
        router.get("/apps/:app") { r, c in await self.page(r) { try await AppPage.render($0, app: try Self.name(c)) } }
        router.get("/apps/:app/releases/:version") { r, c in
            await self.page(r) { try await AppPage.release($0, app: try Self.name(c), version: c.parameters.get("version") ?? "") }
        }
        router.get("/apps/:app/builds/:build") { r, c in
            await self.page(r) { try await BuildsPage.one($0, app: try Self.name(c), build: c.parameters.get("build") ?? "") }
        }
        router.get("/apps/:app/builds/:build/log") { r, c in
            await self.proxy(r, "/apps/\(try Self.name(c))/builds/\(Self.segment(c.parameters.get("build") ?? ""))/log",
                             follow: r.uri.queryParameters.get("follow") == "1")
        }
        router.get("/apps/:app/logs") { r, c in await self.page(r) { try await LogsPage.render($0, app: try Self.name(c)) } }
        router.get("/apps/:app/logs/stream") { r, c in
            let q = r.uri.queryParameters
            var path = "/apps/\(try Self.name(c))/logs?follow=1&lines=0"
            if let ps = q.get("ps"), !ps.isEmpty { path += "&ps=\(HTML.query(ps))" }
            if let release = q.get("release"), !release.isEmpty { path += "&release=\(HTML.query(release))" }
            return await self.proxy(r, path, follow: true)
        }
        router.get("/apps/:app/logs/download") { r, c in
            let app = try Self.name(c)
            var response = await self.proxy(r, "/apps/\(app)/logs?since=\(Int(Date().timeIntervalSince1970))", follow: true)
            response.headers[.contentDisposition] = "attachment; filename=\"\(app)-logs.txt\""
            return response
        }
        Actions(dashboard: self).register(on: router)
    }

    // MARK: - Pages

    /// A page for the session of `request`: its client, revision and time travel, and the errors of its API calls said on it.
    func page(_ request: Request, render: (PageContext) async throws -> Response) async -> Response {
        do {
            return try await render(try await context(request))
        } catch let error as KbuildError {
            return Layout.error(ErrorBody.status(for: error.code), error.message)
        } catch {
            return Layout.error(.internalServerError, "\(error)")
        }
    }

    /// The API client with the token of `request`'s session (or its bearer token).
    func client(_ request: Request) throws -> KbuildClient {
        guard let base = apiBase() else { throw KbuildError(.io, "the API is not listening yet: try again in a moment") }
        let session = SessionMiddleware.cookie(request).flatMap { keys.open($0) }
        return try KbuildClient(base: base, token: session?.token ?? TokenAuthBearer.token(request) ?? "", actor: "dashboard")
    }

    func context(_ request: Request) async throws -> PageContext {
        let session = SessionMiddleware.cookie(request).flatMap { keys.open($0) }
        let client = try client(request)
        var at: Int64?
        if let text = request.uri.queryParameters.get("at") {
            guard let n = Int64(text), n >= 1 else { throw KbuildError(.invalidArgument, "invalid revision \(text.debugQuoted) in ?at=: a number from 1") }
            at = n
        }
        // The revision is read before the page's data: every change after it reaches the page's stream.
        let revision: Revision = try await client.get("/revision")
        if let at, at > revision.value {
            throw KbuildError(.notFound, "revision \(at) is out of range: the store is at revision \(revision.value)")
        }
        // The token check said which apps an app token reaches; the admin token has no such limit.
        let scoped = request.headers[TokenAuthMiddleware<BasicRequestContext>.scopeHeader] != nil
        return PageContext(client: client, csrf: session.map { keys.csrf($0) } ?? "", who: session?.who ?? (scoped ? "app token" : "admin"),
                           isAdmin: !scoped, at: at, revision: revision.value, request: request)
    }

    static func name(_ c: BasicRequestContext) throws -> String {
        let name = c.parameters.get("app") ?? ""
        guard Names.isAppName(name) else { throw KbuildError(.invalidArgument, "invalid app name \(name.debugQuoted)") }
        return name
    }

    static func segment(_ text: String) -> String { HTML.query(text) }

    // MARK: - Streams

    /// The page's event stream: the API's, with the session's token, from `Last-Event-ID` or `?after=N`.
    func events(_ request: Request) async -> Response {
        var path = "/events"
        if let after = request.uri.queryParameters.get("after") { path += "?after=\(HTML.query(after))" }
        var headers: [(String, String)] = []
        if let last = request.headers[HTTPField.Name("Last-Event-ID")!] { headers.append(("Last-Event-ID", last)) }
        return await proxy(request, path, follow: true, headers: headers)
    }

    /// An API answer passed through as it arrives (a log, a followed build, the events).
    func proxy(_ request: Request, _ path: String, follow: Bool, headers: [(String, String)] = []) async -> Response {
        do {
            let upstream = try await client(request).open(.GET, path, body: nil, timeout: follow ? .hours(2) : .seconds(60), headers: headers)
            var out = HTTPFields()
            out[.contentType] = upstream.headers.first(name: "Content-Type") ?? "text/plain; charset=utf-8"
            out[.cacheControl] = "no-store"
            out[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
            return Response(status: .ok, headers: out, body: ResponseBody { writer in
                for try await piece in upstream.body { try await writer.write(piece) }
                try await writer.finish(nil)
            })
        } catch let error as KbuildError {
            return Layout.error(ErrorBody.status(for: error.code), error.message)
        } catch {
            return Layout.error(.internalServerError, "\(error)")
        }
    }
}

/// The bearer token of a request (the session middleware puts a session's there).
enum TokenAuthBearer {
    static func token(_ request: Request) -> String? {
        guard let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") else { return nil }
        return String(header.dropFirst(7))
    }
}

/// What a page is made with: the session's API client, its CSRF token, the
/// revision it shows (now, or `?at=N`), and links that keep the query.
struct PageContext: Sendable {
    let client: KbuildClient
    let csrf: String
    let who: String
    let isAdmin: Bool
    let at: Int64?
    let revision: Int64
    let request: Request

    var path: String { request.uri.path }
    var query: FlatDictionary<Substring, Substring> { request.uri.queryParameters }

    /// An API read, at the page's revision when it has one.
    func api<T: Decodable>(_ path: String, as type: T.Type = T.self) async throws -> T {
        guard let at else { return try await client.get(path) }
        return try await client.get(path + (path.contains("?") ? "&" : "?") + "at=\(at)")
    }

    /// An API read of a paged list: the items and how many there are in all (`Kbuild-Total`).
    func paged<T: Decodable>(_ path: String, as type: [T].Type = [T].self) async throws -> (items: [T], total: Int) {
        let full = at.map { path + (path.contains("?") ? "&" : "?") + "at=\($0)" } ?? path
        let response = try await client.open(.GET, full, body: nil, timeout: .seconds(60))
        let total = response.headers.first(name: API.totalHeader).flatMap { Int($0) }
        let bytes = try await response.body.collect(upTo: 256 << 20)
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let items = try decoder.decode([T].self, from: Data(buffer: bytes))
        return (items, total ?? items.count)
    }

    /// This page with `changes` to its query (nil removes a key).
    func link(_ changes: [String: String?]) -> String {
        var pairs: [(String, String)] = []
        var seen = Set<String>()
        for (k, v) in query {
            let key = String(k)
            if seen.contains(key) { continue }
            seen.insert(key)
            if let change = changes[key] {
                if let change { pairs.append((key, change)) }
            } else {
                pairs.append((key, String(v)))
            }
        }
        for (k, v) in changes where !seen.contains(k) { if let v { pairs.append((k, v)) } }
        return path + (pairs.isEmpty ? "" : "?" + pairs.map { "\(HTML.query($0.0))=\(HTML.query($0.1))" }.joined(separator: "&"))
    }

    func link(page: Int) -> String { link(["page": String(page)]) }
    var pathNow: String { link(["at": nil]) }

    /// A link to another page, at this page's revision when it has one.
    func href(_ target: String) -> String {
        guard let at else { return target }
        return target + (target.contains("?") ? "&" : "?") + "at=\(at)"
    }

    func page(per: Int = 100) -> (page: Int, per: Int) {
        let page = Int(query.get("page") ?? "") ?? 1
        return (max(1, min(page, 1_000_000)), per)
    }
}
