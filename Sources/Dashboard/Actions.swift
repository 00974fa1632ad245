import Foundation
import Hummingbird
import KbuildClient
import KbuildCore
import KbuildState
import NIOCore

/// What a page can do: each a POST (with the session's CSRF token, checked by
/// `SessionMiddleware`) that makes the same API call the CLI makes, then sends
/// the browser back to the app's page saying what happened. Destructive ones
/// (rollback, unset, domain removal, cancel) need their form's "I am sure".
struct Actions: Sendable {
    let dashboard: Dashboard

    func register(on router: Router<BasicRequestContext>) {
        act(router, "scale") { ctx, app, form in
            let type = try Self.field(form, "type"), quantity = try Self.field(form, "quantity")
            let release = try await ctx.client.scale(app, ["\(type)=\(quantity)"])
            return "Scaled \(type) to \(quantity) (v\(release.version))"
        }
        act(router, "config") { ctx, app, form in
            let key = try Self.field(form, "key")
            let answer = try await ctx.client.changeConfig(app, API.ConfigChange(set: [key: form["value"] ?? ""], unset: []))
            return "Set \(key)" + (answer.release.map { " (v\($0))" } ?? "")
        }
        act(router, "config/unset", destructive: true) { ctx, app, form in
            let key = try Self.field(form, "key")
            let answer = try await ctx.client.changeConfig(app, API.ConfigChange(set: [:], unset: [key]))
            return "Unset \(key)" + (answer.release.map { " (v\($0))" } ?? "")
        }
        act(router, "restart") { ctx, app, form in
            let type = form["type"].flatMap { $0.isEmpty ? nil : $0 }
            _ = try await ctx.client.restart(app, type: type)
            return "Restarting \(type ?? "every process type")"
        }
        act(router, "rollback", destructive: true) { ctx, app, form in
            let text = try Self.field(form, "version")
            guard let version = Int64(text.hasPrefix("v") ? String(text.dropFirst()) : text), version > 0 else {
                throw KbuildError(.invalidArgument, "invalid release \(text.debugQuoted): want vN")
            }
            let release = try await ctx.client.rollback(app, to: version)
            return "Rolled back to v\(version): now v\(release.version)"
        }
        act(router, "domains") { ctx, app, form in
            let domain = try Self.field(form, "domain")
            _ = try await ctx.client.addDomain(app, domain)
            return "Added \(domain)"
        }
        act(router, "domains/remove", destructive: true) { ctx, app, form in
            let domain = try Self.field(form, "domain")
            _ = try await ctx.client.removeDomain(app, domain)
            return "Removed \(domain)"
        }
        router.post("/apps/:app/builds/:build/cancel") { r, c in
            await dashboard.page(r) { ctx in
                let app = try Dashboard.name(c)
                let form = Form(try await r.body.collect(upTo: SessionMiddleware.maxForm))
                guard form["confirm"] == "yes" else { throw KbuildError(.invalidArgument, "tick \"I am sure\" to cancel a build: nothing changed") }
                let build = c.parameters.get("build") ?? ""
                let info: API.BuildInfo = try await ctx.client.send(.POST, "/apps/\(Dashboard.segment(app))/builds/\(Dashboard.segment(build))/cancel",
                                                                    [String: String]())
                return Layout.redirect("/apps/\(app)/builds/\(info.build.hex)?done=\(HTML.query("Cancelled build \(info.build.short)"))")
            }
        }
        // The values, shown on purpose (and recorded as an access by the API), on a page of their own.
        router.post("/apps/:app/config/reveal") { r, c in
            await dashboard.page(r) { ctx in
                let app = try Dashboard.name(c)
                let answer: API.ConfigAnswer = try await ctx.client.send(.POST, "/apps/\(app)/config/reveal", [String: String]())
                return AppPage.revealed(ctx, app: app, vars: answer.vars)
            }
        }
    }

    /// `POST /apps/APP/WHAT`: `work` says what it did, shown on the app's page.
    func act(_ router: Router<BasicRequestContext>, _ what: String, destructive: Bool = false,
             _ work: @escaping @Sendable (PageContext, String, Form) async throws -> String) {
        router.post(RouterPath("/apps/:app/\(what)")) { r, c in
            await dashboard.page(r) { ctx in
                let app = try Dashboard.name(c)
                let form = Form(try await r.body.collect(upTo: SessionMiddleware.maxForm))
                if destructive, form["confirm"] != "yes" {
                    throw KbuildError(.invalidArgument, "tick \"I am sure\" to do that: nothing changed")
                }
                let said = try await work(ctx, app, form)
                return Layout.redirect("/apps/\(app)?done=\(HTML.query(said))")
            }
        }
    }

    static func field(_ form: Form, _ name: String) throws -> String {
        guard let value = form[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else {
            throw KbuildError(.invalidArgument, "missing \(name): fill it in and try again")
        }
        return value
    }
}
