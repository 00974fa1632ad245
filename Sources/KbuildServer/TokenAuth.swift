public import Hummingbird
public import KbuildCore
import Foundation

/// Checks the token of every request except `/healthz`: `Authorization: Bearer
/// TOKEN`, or HTTP basic auth with the token as the password (the way git and
/// docker clients send it). A request without a valid token gets 401 and
/// learns nothing else.
public struct TokenAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let tokens: [String]

    public init(tokens: [String]) { self.tokens = tokens }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path == "/healthz" { return try await next(request, context) }
        guard let given = TokenAuthMiddleware.token(from: request.headers[.authorization]),
              tokens.contains(where: { AdminToken.matches(given, $0) })
        else {
            var headers = HTTPFields()
            headers[.wwwAuthenticate] = "Basic realm=\"kbuild\""
            headers[.contentType] = "application/json"
            let body = ErrorBody.json(KbuildError(.unauthorized, "failed to authenticate: a valid kbuild token is required"))
            return Response(status: .unauthorized, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        return try await next(request, context)
    }

    /// The token in an Authorization header value.
    static func token(from header: String?) -> String? {
        guard let header else { return nil }
        if header.lowercased().hasPrefix("bearer ") { return String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces) }
        if header.lowercased().hasPrefix("basic "),
           let data = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
           let pair = String(data: data, encoding: .utf8), let colon = pair.firstIndex(of: ":") {
            return String(pair[pair.index(after: colon)...])
        }
        return nil
    }
}

/// The JSON body of every error response: `{"error":{"code":…,"message":…}}`.
public enum ErrorBody {
    static func json(_ error: KbuildError) -> String {
        struct Body: Encodable { struct Inner: Encodable { let code: String; let message: String }; let error: Inner }
        let data = (try? JSONEncoder().encode(Body(error: .init(code: error.code.rawValue, message: error.message)))) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    static func status(for code: KbuildError.Code) -> HTTPResponse.Status {
        switch code {
        case .invalidArgument: .badRequest
        case .notFound: .notFound
        case .ambiguous: .badRequest
        case .conflict: .conflict
        case .unauthorized: .unauthorized
        case .unsatisfiable: .rangeNotSatisfiable
        case .corrupt, .io: .internalServerError
        }
    }

    public static func response(_ error: KbuildError, headers extra: HTTPFields = [:]) -> Response {
        var headers = extra
        headers[.contentType] = "application/json"
        return Response(status: status(for: error.code), headers: headers, body: .init(byteBuffer: ByteBuffer(string: json(error))))
    }
}
