public import Hummingbird
public import KbuildCore
import Foundation
public import HTTPTypes
import KbuildState

/// Checks the token of every request except `/healthz`: `Authorization: Bearer
/// TOKEN`, or HTTP basic auth with the token as the password (the way git and
/// docker clients send it). A request without a valid token gets 401 and
/// learns nothing else.
///
/// App tokens (`AppTokens`) may act on their apps only: the API under
/// /api/v1/apps/APP (but not destroy the app or set its limits), git at
/// /APP.git and registry pulls of APP. Anything else
/// gets 403, the same answer whether or not the app exists. The handlers learn
/// the token's apps from the `Kbuild-Scope` header this middleware sets, and
/// its name from `Kbuild-Token-Name` (either one a client sends is dropped).
///
/// Node (join) tokens reach the state routes and the Keg's objects only
/// (`NodeScope.allows`), and the handlers learn the node from `Kbuild-Node`:
/// they check each ref, record and object against what that node's
/// assignment reaches (`NodeReach`). Build workers' tokens reach what
/// `WorkerScope.allows` says, and the handlers learn the worker from `Kbuild-Worker`.
public struct TokenAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let tokens: [String]
    let appTokens: AppTokens?

    public init(tokens: [String], appTokens: AppTokens? = nil) {
        self.tokens = tokens
        self.appTokens = appTokens
    }

    public static var scopeHeader: HTTPField.Name { HTTPField.Name("Kbuild-Scope")! }
    /// The app token's name, set beside the scope: who acts, whatever the client claims.
    public static var tokenNameHeader: HTTPField.Name { HTTPField.Name("Kbuild-Token-Name")! }
    /// The CA of the API's TLS certificate (public, like /healthz): what a client checks its pinned hash against.
    public static var caPath: String { "/tls/ca.crt" }
    /// The node a join token acts as.
    public static var nodeHeader: HTTPField.Name { HTTPField.Name("Kbuild-Node")! }
    /// The only address that node may register, when its token names one.
    public static var nodeAddressHeader: HTTPField.Name { HTTPField.Name("Kbuild-Node-Address")! }
    /// The build worker a worker join token acts as.
    public static var workerHeader: HTTPField.Name { HTTPField.Name("Kbuild-Worker")! }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var head = request.head
        for name in [TokenAuthMiddleware.scopeHeader, TokenAuthMiddleware.tokenNameHeader, TokenAuthMiddleware.nodeHeader,
                     TokenAuthMiddleware.nodeAddressHeader, TokenAuthMiddleware.workerHeader] where head.headerFields[name] != nil {
            head.headerFields[name] = nil
        }
        let request = head == request.head ? request : Request(head: head, body: request.body)
        if request.uri.path == "/healthz" || request.uri.path == Self.caPath || DashboardPaths.isPublic(request.uri.path) {
            return try await next(request, context)
        }
        guard let given = TokenAuthMiddleware.token(from: request.headers[.authorization]) else { return TokenAuthMiddleware.unauthorized() }
        // A browser sends credentials it cached (basic auth) with another site's forms too: a change to the API
        // asked from another site is refused (browsers say so in Sec-Fetch-Site; kbuild's clients send none).
        if request.uri.path.hasPrefix("/api/"), request.method != .get, request.method != .head,
           let site = request.headers[HTTPField.Name("Sec-Fetch-Site")!], site == "cross-site" || site == "same-site" {
            return ErrorBody.response(KbuildError(.forbidden, "a change to the API from another site's page is refused"))
        }
        if tokens.contains(where: { AdminToken.matches(given, $0) }) { return try await next(request, context) }
        guard let scope = await appTokens?.lookup(given) else { return TokenAuthMiddleware.unauthorized() }
        if let node = scope.node {
            guard NodeScope.allows(method: request.method, path: request.uri.path) else {
                return ErrorBody.response(KbuildError(.forbidden, "this token may not do that (it is node \(node)'s join token)"))
            }
            head.headerFields[TokenAuthMiddleware.nodeHeader] = node
            head.headerFields[TokenAuthMiddleware.nodeAddressHeader] = scope.address
        } else if let worker = scope.worker {
            guard WorkerScope.allows(method: request.method, path: request.uri.path) else {
                return ErrorBody.response(KbuildError(.forbidden, "this token may not do that (it is build worker \(worker)'s join token)"))
            }
            head.headerFields[TokenAuthMiddleware.workerHeader] = worker
        } else {
            guard TokenAuthMiddleware.allows(apps: scope.apps, method: request.method, path: request.uri.path) else {
                return ErrorBody.response(KbuildError(.forbidden, "this token may not do that (it is limited to some apps)"))
            }
            head.headerFields[TokenAuthMiddleware.scopeHeader] = scope.apps.joined(separator: ",")
        }
        head.headerFields[TokenAuthMiddleware.tokenNameHeader] = scope.name
        return try await next(Request(head: head, body: request.body), context)
    }

    static func unauthorized() -> Response {
        var headers = HTTPFields()
        headers[.wwwAuthenticate] = "Basic realm=\"kbuild\""
        headers[.contentType] = "application/json"
        let body = ErrorBody.json(KbuildError(.unauthorized, "failed to authenticate: a valid kbuild token is required"))
        return Response(status: .unauthorized, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// What an app token may reach: a pure function of its apps and the request line.
    public static func allows(apps: [String], method: HTTPRequest.Method, path: String) -> Bool {
        // Split as the router splits (empty pieces dropped: `/api//v1/apps/x/` is
        // `/api/v1/apps/x`), so a slash more or less never changes which rule applies.
        if path == "/v2/" || path == "/v2" { return method == .get || method == .head }
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if DashboardPaths.isDashboard(path), let answer = DashboardPaths.allows(apps: apps, method: method, parts: parts) { return answer }
        // The app list (filtered by the handler to the token's apps).
        if parts == ["api", "v1", "apps"] { return method == .get }
        // Builds across apps and the event stream (filtered by the handlers to the token's apps).
        if parts == ["api", "v1", "builds"] || parts == ["api", "v1", "events"] || parts == ["api", "v1", "revision"] { return method == .get }
        // The router's metrics (filtered by the handler to the token's apps).
        if parts == ["metrics"] { return method == .get }
        // A one-time dashboard login for this token.
        if parts == ["api", "v1", "dashboard", "login-codes"] { return method == .post }
        // The API of one app, but not destroying it (the admin's call, as an owner's is on Heroku).
        if parts.count >= 4, parts[0] == "api", parts[1] == "v1", parts[2] == "apps" {
            if parts.count == 4 && method == .delete { return false }
            // Its limits are the admin's to set (it may read them).
            if parts.count == 5 && parts[4] == "limits" && method != .get { return false }
            // A push is handed over by the git hook, with the admin token: an app token pushes with git.
            if parts.count == 5 && (parts[4] == "pushes" || parts[4] == "push-terms") { return false }
            return apps.contains(parts[3])
        }
        // git over smart HTTP: /APP.git/…
        if let first = parts.first, first.hasSuffix(".git") { return apps.contains(String(first.dropLast(4))) }
        // Registry pulls of the app's image: /v2/APP/… (the repository is the app's
        // own name or under it; `stacks/…` only for an app named so, which cannot be made).
        if method == .get || method == .head {
            if parts.count >= 3, parts[0] == "v2" { return apps.contains(parts[1]) }
        }
        return false
    }

    /// The token in an Authorization header value.
    static func token(from header: String?) -> String? {
        guard let header else { return nil }
        if header.lowercased().hasPrefix("bearer ") { return String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces) }
        return BasicAuth.pair(header)?.password
    }
}

/// The JSON body of every error response: `{"error":{"code":…,"message":…}}`.
public enum ErrorBody {
    static func json(_ error: KbuildError) -> String {
        let data = (try? JSONEncoder().encode(API.ErrorAnswer(code: error.code.rawValue, message: error.message))) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// The HTTP status of each error code (the dashboard's pages answer with the same).
    public static func status(for code: KbuildError.Code) -> HTTPResponse.Status {
        switch code {
        case .invalidArgument: .badRequest
        case .notFound: .notFound
        case .ambiguous: .badRequest
        case .conflict: .conflict
        case .unauthorized: .unauthorized
        case .forbidden: .forbidden
        case .unsatisfiable: .rangeNotSatisfiable
        case .tooLarge: .contentTooLarge
        case .corrupt, .io: .internalServerError
        }
    }

    public static func response(_ error: KbuildError, headers extra: HTTPFields = [:]) -> Response {
        var headers = extra
        headers[.contentType] = "application/json"
        return Response(status: status(for: error.code), headers: headers, body: .init(byteBuffer: ByteBuffer(string: json(error))))
    }
}

/// HTTP basic auth, as git and docker clients send kbuild's token: the password
/// is the token, the user name says who pushes (or acts).
public enum BasicAuth {
    static func pair(_ header: String?) -> (user: String, password: String)? {
        guard let header, header.lowercased().hasPrefix("basic "),
              let data = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
              let pair = String(data: data, encoding: .utf8), let colon = pair.firstIndex(of: ":")
        else { return nil }
        return (String(pair[..<colon]), String(pair[pair.index(after: colon)...]))
    }

    /// The user name, if it is a sane one (1 to 64 printable ASCII bytes, no spaces).
    public static func user(_ header: String?) -> String? {
        guard let user = pair(header)?.user, !user.isEmpty, user.utf8.count <= 64, user.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return nil }
        return user
    }
}
