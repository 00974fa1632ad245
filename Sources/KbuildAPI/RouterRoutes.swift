import Foundation
import Hummingbird
import KbuildCore
import KbuildServer
import KbuildState
import Router
import HTTPTypes

/// The router's side of the API: each app's router settings (`kbuild router:settings`), its request
/// metrics (`GET /api/v1/apps/APP/metrics`, for the dashboard), and `/metrics` in Prometheus' text
/// format. An app token sees and sets its own apps' only; `/metrics` shows it only its apps' series.
extension APIRoutes {
    func registerRouter(on router: Router<Context>) {
        let p = API.prefix
        router.get("\(p)/apps/:app/router") { r, c in
            try await self.answer {
                let view = try await self.viewing(r, app: try self.app(c))
                return try await view.routerSettings(try await view.existing(c))
            }
        }
        router.put("\(p)/apps/:app/router") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let body = try await self.decode(RouterSettings.self, r, c)
                let settings = RouterSettings(requestTimeout: body.requestTimeout, bodyLimit: body.bodyLimit, redirectHTTPS: body.redirectHTTPS)
                try settings.check()
                try await self.refs.compareAndSwap(try Schema.router(app), to: try Records.put(settings, in: self.keg), expecting: .any,
                                                   actor: self.actor(r))
                return settings
            }
        }
        router.get("\(p)/apps/:app/metrics") { _, c in
            try await self.answer {
                let app = try await self.existing(c)
                let s = (self.routerMetrics ?? RouterMetrics()).summary(app: app)
                return API.RouterTraffic(app: s.app, windowMinutes: s.windowMinutes, recent: s.recent, p50: s.p50, p95: s.p95, p99: s.p99,
                                         total: s.total, bytes: s.bytes)
            }
        }
        router.get("/metrics") { r, _ in
            let scope = self.scope(r).map(Set.init)
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            let text = (self.routerMetrics ?? RouterMetrics()).prometheus { app in scope?.contains(app) ?? true }
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
        }
    }

    func routerSettings(_ app: String) async throws -> RouterSettings {
        guard let ref = try await refs.get(try Schema.router(app)) else { return RouterSettings() }
        return try await reader.record(RouterSettings.self, ref.kid, what: "router settings")
    }
}
