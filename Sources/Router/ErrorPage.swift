import NIOCore
import NIOHTTP1

/// The router's own answers, when no backend answers for the app.
enum ErrorPage {
    case badHost(String)
    /// A request the router will not forward (its framing is ambiguous).
    case badRequest(String)
    case unknownApp(host: String)
    case noHealthyProcess(app: String)
    case badGateway(app: String)
    case gatewayTimeout(app: String, seconds: Int)
    /// The app's web processes are not running because they crashed (H10).
    case crashed(app: String)
    /// The request head was larger than the router takes, or had too many header fields.
    case headersTooLarge(String)
    /// The request body was larger than the app's limit.
    case bodyTooLarge(app: String, limit: Int)
    /// The client's address holds as many connections as the router allows one address.
    case tooManyConnections(limit: Int)
    /// The app takes HTTPS only: the same URL there.
    case redirect(location: String)
    /// The request body stopped arriving.
    case clientTimeout(seconds: Int)

    var status: HTTPResponseStatus {
        switch self {
        case .badHost, .badRequest: .badRequest
        case .unknownApp: .notFound
        case .noHealthyProcess, .crashed: .serviceUnavailable
        case .badGateway: .badGateway
        case .gatewayTimeout: .gatewayTimeout
        case .headersTooLarge: .requestHeaderFieldsTooLarge
        case .bodyTooLarge: .payloadTooLarge
        case .tooManyConnections: .tooManyRequests
        case .redirect: .permanentRedirect
        case .clientTimeout: .requestTimeout
        }
    }

    /// The Heroku code a router log line carries for this page.
    var error: RouterError? {
        switch self {
        case .badHost, .unknownApp, .redirect: nil
        case .badRequest, .headersTooLarge, .bodyTooLarge, .tooManyConnections: .refused
        case .clientTimeout: .clientTimeout
        case .noHealthyProcess: .noWebProcesses
        case .crashed: .appCrashed
        case .badGateway: .connectionRefused
        case .gatewayTimeout: .requestTimeout
        }
    }

    var message: String {
        switch self {
        case .badHost(let host):
            host.isEmpty ? "The request has no Host header." : "The Host header \(host) is not a valid host name."
        case .badRequest(let why):
            why
        case .unknownApp(let host):
            "no app is served at \(host)"
        case .noHealthyProcess(let app):
            "The app \(app) has no healthy web process right now. Try again in a few seconds."
        case .badGateway(let app):
            "The app \(app) could not be reached: no web process accepted the connection."
        case .gatewayTimeout(let app, let seconds):
            "The app \(app) did not answer within its request timeout of \(seconds) s."
        case .crashed(let app):
            "The app \(app) crashed: its web processes exited and are being restarted. Its logs say why (kbuild logs \(app))."
        case .headersTooLarge(let why):
            why
        case .bodyTooLarge(let app, let limit):
            "The request body is larger than the \(limit) bytes the app \(app) takes."
        case .tooManyConnections(let limit):
            "Your address holds \(limit) open connections, as many as the router allows one address."
        case .redirect(let location):
            "This app is served over HTTPS: \(location)"
        case .clientTimeout(let seconds):
            "The request body stopped arriving for \(seconds) s."
        }
    }

    func html(requestID: String) -> String {
        let title = "\(status.code) \(status.reasonPhrase)"
        return """
            <!doctype html>
            <html><head><meta charset="utf-8"><title>\(title)</title></head>
            <body><h1>\(title)</h1><p>\(Self.escaped(message))</p>
            <p>Request id: <code>\(Self.escaped(requestID))</code></p></body></html>

            """
    }

    func head(version: HTTPVersion, requestID: String, traceID: String, keepAlive: Bool, retryAfter: Int, bodyLength: Int)
        -> HTTPResponseHead
    {
        var headers = HTTPHeaders()
        headers.reserveCapacity(6)
        headers.add(name: "content-type", value: "text/html; charset=utf-8")
        headers.add(name: "content-length", value: String(bodyLength))
        headers.add(name: "cache-control", value: "no-store")
        headers.add(name: "x-request-id", value: requestID)
        if traceID != requestID { headers.add(name: "kbuild-request-id", value: traceID) }
        switch self {
        case .noHealthyProcess, .crashed, .tooManyConnections: headers.add(name: "retry-after", value: String(retryAfter))
        case .redirect(let location): headers.add(name: "location", value: location)
        default: break
        }
        if !keepAlive {
            headers.add(name: "connection", value: "close")
        } else if version.minor == 0 {
            headers.add(name: "connection", value: "keep-alive")
        }
        return HTTPResponseHead(version: version, status: status, headers: headers)
    }

    private static func escaped(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            case "\"": out += "&quot;"
            default: out.append(character)
            }
        }
        return out
    }
}
