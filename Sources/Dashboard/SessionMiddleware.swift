import Foundation
import Hummingbird
import HTTPTypes
import KbuildCore
import KbuildServer
import NIOCore

/// In front of the token check, for the dashboard's paths only (the API, git
/// and the registry never read cookies, so no other site can make a browser
/// act on them): a valid session cookie becomes the token it was made from,
/// and a request that changes state must carry the session's CSRF token (a
/// form's `csrf` field or an `X-CSRF-Token` header). Without a session a page
/// sends the browser to the login form. An error the API gives (403, 404, …)
/// is shown as a page saying it.
struct SessionMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let keys: SessionKeys
    let tls: Bool
    static let csrfHeader = HTTPField.Name("X-CSRF-Token")!
    static let tlsHeader = HTTPField.Name("Kbuild-Dashboard-TLS")!
    static let maxForm = 256 << 10

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard DashboardPaths.isDashboard(path) else { return try await next(request, context) }
        var head = request.head
        // Whether this listener is the TLS one (its cookies are Secure), said by the server only.
        head.headerFields[Self.tlsHeader] = tls ? "1" : nil
        // Only a bearer token stands in for a session here: basic credentials are what a browser caches and
        // sends again by itself (to any site's form), so on these paths they are dropped, never trusted without CSRF.
        if let auth = head.headerFields[.authorization], !auth.lowercased().hasPrefix("bearer ") { head.headerFields[.authorization] = nil }
        guard !DashboardPaths.isPublic(path) else { return try await next(Request(head: head, body: request.body), context) }
        var body = request.body
        let cookie = Self.cookie(request)
        let session = cookie.flatMap { keys.open($0) }
        if let session {
            head.headerFields[.authorization] = "Bearer \(session.token)"
            if request.method != .get && request.method != .head {
                let collected: ByteBuffer
                do {
                    collected = try await request.body.collect(upTo: Self.maxForm)
                } catch {
                    return Layout.error(.contentTooLarge, "the form is over \(Self.maxForm >> 10) KiB: nothing changed")
                }
                let given = request.headers[Self.csrfHeader] ?? Form(collected)["csrf"]
                guard keys.checkCSRF(given, session) else {
                    return Layout.error(.forbidden, "the form's CSRF token is missing or wrong (a stale page, or another site): nothing changed. Reload the page and try again.")
                }
                body = RequestBody(buffer: collected)
            }
        } else if head.headerFields[.authorization] == nil {
            // No login (or an expired, forged or logged-out cookie): the login form, and the cookie dropped.
            var response: Response
            if request.method == .get || request.method == .head {
                let target = request.uri.description
                response = Response(status: .seeOther, headers: [.location: "/login?next=\(HTML.query(target))"])
            } else {
                response = Layout.error(.forbidden, "log in first: nothing changed")
            }
            if cookie != nil { response.headers[values: .setCookie] = [expiredCookie] }
            return response
        }
        let response = try await next(Request(head: head, body: body), context)
        guard response.status.code >= 400, response.headers[.contentType] == "application/json" else { return response }
        // The API's refusal, said as a page (its message is all there is to it).
        let bytes = try await response.body.collectAll(upTo: 1 << 20)
        let message = (try? JSONDecoder().decode(APIErrorBody.self, from: Data(buffer: bytes)))?.error.message ?? "failed (\(response.status.code))"
        if response.status == .unauthorized {
            // The token behind the session was revoked: log in again.
            var page = Layout.error(.unauthorized, "the token this session logged in with is no longer valid: log in again")
            page.headers[values: .setCookie] = [expiredCookie]
            return page
        }
        return Layout.error(response.status, message)
    }

    struct APIErrorBody: Decodable {
        struct Inner: Decodable { var message: String }
        var error: Inner
    }

    static func cookie(_ request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces)
                if pair.hasPrefix(SessionKeys.cookie + "=") { return String(pair.dropFirst(SessionKeys.cookie.count + 1)) }
            }
        }
        return nil
    }

    func setCookie(_ value: String) -> String {
        "\(SessionKeys.cookie)=\(value); Path=/; Max-Age=\(Int(SessionKeys.lifetime)); HttpOnly; SameSite=Strict\(tls ? "; Secure" : "")"
    }

    var expiredCookie: String { "\(SessionKeys.cookie)=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict\(tls ? "; Secure" : "")" }
}

extension ResponseBody {
    /// The whole body (an error's: small).
    func collectAll(upTo limit: Int) async throws -> ByteBuffer {
        let sink = BodySink(limit: limit)
        try await write(sink)
        return sink.buffer
    }
}

final class BodySink: ResponseBodyWriter, @unchecked Sendable {
    var buffer = ByteBuffer()
    let limit: Int
    init(limit: Int) { self.limit = limit }
    func write(_ part: ByteBuffer) async throws {
        var part = part
        if buffer.readableBytes + part.readableBytes <= limit { buffer.writeBuffer(&part) }
    }
    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

/// An `application/x-www-form-urlencoded` body.
struct Form: Sendable {
    var fields: [(String, String)] = []

    init(_ buffer: ByteBuffer) { self.init(String(buffer: buffer)) }

    init(_ text: String) {
        for pair in text.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let decode = { (s: Substring) in s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "" }
            fields.append((decode(kv[0]), kv.count > 1 ? decode(kv[1]) : ""))
        }
    }

    subscript(_ name: String) -> String? { fields.first { $0.0 == name }?.1 }
    func all(_ name: String) -> [String] { fields.filter { $0.0 == name }.map(\.1) }
}
