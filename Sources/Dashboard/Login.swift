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
            if SessionMiddleware.cookie(r).flatMap({ keys.open($0) }) != nil, q.get("code") == nil { return Layout.redirect(next) }
            return Self.loginPage(next: next, code: q.get("code"), message: nil)
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
            let client: KbuildClient
            let apps: [API.AppInfo]
            do {
                client = try KbuildClient(base: base, token: token, actor: "dashboard")
                apps = try await client.apps()
            } catch let error as KbuildError where error.code == .unauthorized {
                return Self.loginPage(next: next, code: nil, message: "that token is not valid here", status: .unauthorized)
            } catch let error as KbuildError where error.code == .forbidden {
                return Self.loginPage(next: next, code: nil, message: "that token cannot log in to the dashboard (it is a node's or a build worker's join token)", status: .forbidden)
            } catch {
                return Layout.error(.internalServerError, "failed to check the token: \(error)")
            }
            // The admin token reads the token list; an app token may not.
            let admin = (try? await client.tokens()) != nil
            let who = admin ? "admin" : "app token (\(apps.map(\.name).joined(separator: ", ")))"
            let session = Session(id: SessionKeys.newID(), token: token, expires: Date().timeIntervalSince1970 + SessionKeys.lifetime,
                                  who: String(who.prefix(200)))
            var response = Layout.redirect(next)
            response.headers[values: .setCookie] = [SessionMiddleware(keys: keys, tls: Self.isTLS(r)).setCookie(try keys.seal(session))]
            return response
        }
        router.post("/logout") { r, _ in
            if let session = SessionMiddleware.cookie(r).flatMap({ keys.open($0) }) { keys.revoke(session) }
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

    static func loginPage(next: String, code: String?, message: String?, status: HTTPResponse.Status = .ok) -> Response {
        let alert: HTML = message.map { "<p class=\"error\" role=\"alert\">\($0)</p>" } ?? ""
        let form: HTML
        if let code {
            form = """
                <p>This one-time link logs this browser in with the token of the <code>kbuild dashboard</code> that made it.</p>
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
    static func safeNext(_ text: String?) -> String {
        guard let text, text.hasPrefix("/"), !text.hasPrefix("//"), !text.hasPrefix("/\\"), !text.contains("\r"), !text.contains("\n"),
              text.utf8.count <= 2048 else { return "/" }
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
