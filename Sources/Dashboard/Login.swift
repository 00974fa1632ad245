import Foundation
import Hummingbird
import HTTPTypes
import KbuildClient
import KbuildCore
import KbuildServer
import KbuildState
import NIOCore

/// Logging in with a token (typed, or a one-time code from `kbuild dashboard`),
/// which becomes a sealed session cookie; logging out revokes it.
extension Dashboard {
    func registerLogin(on router: Router<BasicRequestContext>) {
        router.get("/login") { r, _ in
            let q = r.uri.queryParameters
            let next = Self.safeNext(q.get("next"))
            let current = SessionMiddleware.cookie(r).flatMap { keys.open($0) }
            guard let code = q.get("code") else {
                if current != nil { return Layout.redirect(next) }
                return Self.loginPage(next: next, code: nil, message: nil)
            }
            // Whose link this is, said before it is used: a link someone else made would log this browser in as them.
            guard let token = keys.peek(code), let base = apiBase(), case .success(let who) = await Self.identify(token, base: base) else {
                return Self.loginPage(next: next, code: nil, message: "that login link was used already or has expired: run kbuild dashboard again, or log in with a token", status: .unauthorized)
            }
            return Self.loginPage(next: next, code: code, as: who, replacing: current?.who, message: nil)
        }
        router.post("/login") { r, _ in
            // A login form posted from another site would log this browser in as someone else.
            if let origin = r.headers[.origin], let host = r.head.authority, !Self.sameOrigin(origin, host: host) {
                return Layout.error(.forbidden, "a login from another site (\(origin)) is refused")
            }
            let form = Form((try? await r.body.collect(upTo: 64 << 10)) ?? ByteBuffer())
            let next = Self.safeNext(form["next"])
            let token: String
            if let code = form["code"], !code.isEmpty {
                guard let spent = keys.spend(code) else {
                    return Self.loginPage(next: next, code: nil, message: "that login link was used already or has expired: run kbuild dashboard again, or log in with a token", status: .unauthorized)
                }
                token = spent
            } else {
                token = (form["token"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            }
            guard !token.isEmpty else { return Self.loginPage(next: next, code: nil, message: "give a token (the admin token, or an app token)", status: .badRequest) }
            guard let base = apiBase() else { return Layout.error(.serviceUnavailable, "the API is not listening yet: try again in a moment") }
            let who: String
            switch await Self.identify(token, base: base) {
            case .success(let name): who = name
            case .failure(let refusal): return Self.loginPage(next: next, code: nil, message: refusal.message, status: refusal.status)
            }
            let session = Session(id: SessionKeys.newID(), token: token, expires: Date().timeIntervalSince1970 + SessionKeys.lifetime,
                                  who: who)
            var response = Layout.redirect(next)
            response.headers[values: .setCookie] = [SessionMiddleware(keys: keys, tls: Self.isTLS(r)).setCookie(try keys.seal(session))]
            return response
        }
        router.post("/logout") { r, _ in
            if let session = SessionMiddleware.cookie(r).flatMap({ keys.open($0) }) {
                do { try keys.revoke(session) } catch { return Layout.error(.internalServerError, "\(error)") }
            }
            var response = Layout.redirect("/login")
            response.headers[values: .setCookie] = [SessionMiddleware(keys: keys, tls: Self.isTLS(r)).expiredCookie]
            return response
        }
        // `kbuild dashboard`: a one-time login URL for the token that asks (behind the token check).
        router.post("\(API.prefix)/dashboard/login-codes") { r, _ in
            guard let token = TokenAuthBearer.token(r) ?? BasicAuthPassword.password(r) else {
                return Layout.error(.unauthorized, "no token")
            }
            let (code, expires) = keys.makeCode(for: token)
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            let body = try encoder.encode(API.LoginCode(path: "/login?code=\(code)", expires: expires))
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: Array(body))))
        }
    }

    struct Refusal: Error {
        var status: HTTPResponse.Status
        var message: String
    }

    /// Who a token is, as the page header says it ("admin", or an app token's apps), or why it cannot log in.
    static func identify(_ token: String, base: String) async -> Result<String, Refusal> {
        do {
            let client = try KbuildClient(base: base, token: token, actor: "dashboard")
            let apps = try await client.apps()
            // The admin token reads the token list; an app token may not.
            let admin = (try? await client.tokens()) != nil
            return .success(String((admin ? "admin" : "app token (\(apps.map(\.name).joined(separator: ", ")))").prefix(200)))
        } catch let error as KbuildError where error.code == .unauthorized {
            return .failure(Refusal(status: .unauthorized, message: "that token is not valid here"))
        } catch let error as KbuildError where error.code == .forbidden {
            return .failure(Refusal(status: .forbidden, message: "that token cannot log in to the dashboard (it is a node's or a build worker's join token)"))
        } catch {
            return .failure(Refusal(status: .internalServerError, message: "failed to check the token: \(error)"))
        }
    }

    static func loginPage(next: String, code: String?, as who: String? = nil, replacing current: String? = nil, message: String?,
                          status: HTTPResponse.Status = .ok) -> Response {
        let alert: HTML = message.map { "<p class=\"error\" role=\"alert\">\($0)</p>" } ?? ""
        let form: HTML
        if let code {
            form = """
                <p>This one-time link logs this browser in as <strong>\(who ?? "the token of the kbuild dashboard that made it")</strong>. \
                Continue only if you made it with <code>kbuild dashboard</code>.</p>
                \(current.map { HTML("<p class=\"warn\">This browser is logged in as \($0): continuing logs it in as the link's token instead.</p>") } ?? .empty)
                <form method="post" action="/login"><input type="hidden" name="code" value="\(code)"><input type="hidden" name="next" value="\(next)">
                <button type="submit">Continue to the dashboard</button></form>
                """
        } else {
            form = """
                <form method="post" action="/login"><input type="hidden" name="next" value="\(next)">
                <label for="token">Token</label>
                <input id="token" name="token" type="password" autocomplete="off" required spellcheck="false">
                <p class="hint">The admin token (<code>DATA/admin.token</code>) or an app token (<code>kbuild tokens:create</code>). \
                Or run <code>kbuild dashboard</code> for a one-time link.</p>
                <button type="submit">Log in</button></form>
                """
        }
        return Layout.html("""
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Log in · kbuild</title><link rel="stylesheet" href="/static/kbuild.css"></head>
            <body><header><nav aria-label="Main"><ul><li class="brand"><a href="/">kbuild</a></li></ul></nav></header>
            <main id="main" class="login"><h1>Log in to kbuild</h1>\(alert)\(form)</main></body></html>
            """, status: status)
    }

    /// Where to go after logging in: a path on this site only.
    /// No control character, space or backslash anywhere (a browser drops tabs and newlines from a URL and reads
    /// `\\` as `/`, so `/\t/evil.example` would become `//evil.example`), then not `//`.
    static func safeNext(_ text: String?) -> String {
        guard let text, text.hasPrefix("/"), text.utf8.count <= 2048,
              text.utf8.allSatisfy({ $0 > 0x20 && $0 != 0x7f && $0 != UInt8(ascii: "\\") }), !text.hasPrefix("//") else { return "/" }
        return text
    }

    static func sameOrigin(_ origin: String, host: String) -> Bool {
        origin == "http://\(host)" || origin == "https://\(host)"
    }

    static func isTLS(_ r: Request) -> Bool { r.headers[SessionMiddleware.tlsHeader] == "1" }
}

enum BasicAuthPassword {
    static func password(_ r: Request) -> String? {
        guard let header = r.headers[.authorization], header.lowercased().hasPrefix("basic "),
              let data = Data(base64Encoded: String(header.dropFirst(6))), let pair = String(data: data, encoding: .utf8),
              let colon = pair.firstIndex(of: ":") else { return nil }
        return String(pair[pair.index(after: colon)...])
    }
}
