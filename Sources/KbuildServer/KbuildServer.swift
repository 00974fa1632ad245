public import Hummingbird
public import Keg
public import Logging
public import KbuildState
import Foundation
public import ServiceLifecycle
import HummingbirdCore
import HummingbirdTLS
import HTTPTypes

/// The one HTTP server of a kbuild host: the Keg's objects, the registry and
/// git's smart HTTP, and the API (`api` registers its routes).
public enum KbuildHTTP {
    /// The request context of every route.
    public typealias Context = BasicRequestContext

    /// The router with every route and the token check in front of them.
    public static func router(keg: Keg, refs: any RefStore, tokens: [String], git: GitHTTPRoutes<BasicRequestContext>? = nil,
                              api: (@Sendable (Router<BasicRequestContext>) -> Void)? = nil) -> Router<BasicRequestContext> {
        router(keg: keg, refs: refs, tokens: tokens, git: git, api: api, uploads: RegistryUploads(keg: keg))
    }

    /// Middleware in front of the token check (the dashboard's sessions, which turn a cookie into a token).
    public typealias Front = any MiddlewareProtocol<Request, Response, BasicRequestContext>

    static func router(keg: Keg, refs: any RefStore, tokens: [String], git: GitHTTPRoutes<BasicRequestContext>?,
                       api: (@Sendable (Router<BasicRequestContext>) -> Void)?, uploads: RegistryUploads, caPEM: String? = nil,
                       front: [Front] = []) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: APIVersionMiddleware())
        for middleware in front { router.add(middleware: middleware) }
        router.add(middleware: TokenAuthMiddleware(tokens: tokens, appTokens: AppTokens(keg: keg, refs: refs)))
        router.get("/healthz") { _, _ in "ok\n" }
        // The CA, for a client to check against the hash it was given (public: it is a certificate).
        router.get("/tls/ca.crt") { _, _ in caPEM ?? "" }
        KegRoutes<BasicRequestContext>(keg: keg, reach: NodeReach(keg: keg, refs: refs)).register(on: router)
        RegistryRoutes<BasicRequestContext>(keg: keg, refs: refs, uploads: uploads).register(on: router)
        git?.register(on: router)
        api?(router)
        return router
    }

    /// git's smart HTTP for the repositories under `projectRoot`.
    public static func gitRoutes(projectRoot: String, spoolDir: String, environment: [String: String]) -> GitHTTPRoutes<BasicRequestContext> {
        GitHTTPRoutes(projectRoot: projectRoot, spoolDir: spoolDir, environment: environment)
    }

    /// Where and how the TLS listener serves: the same routes as the plain one.
    public struct TLSListener: Sendable {
        public var host: String
        public var port: Int
        public var identity: ServerTLS
        public var onRunning: @Sendable (String) async -> Void
        public init(host: String, port: Int, identity: ServerTLS, onRunning: @escaping @Sendable (String) async -> Void) {
            self.host = host
            self.port = port
            self.identity = identity
            self.onRunning = onRunning
        }
    }

    /// The HTTP servers as `Service`s, ready for a `ServiceGroup`: the plain one (for 127.0.0.1) and, with `tls`, the HTTPS one
    /// between machines, serving one set of routes (their registry uploads
    /// and connection limits shared). `onRunning` gets each base URL once bound (useful with port 0).
    public static func servers(keg: Keg, refs: any RefStore, tokens: [String], git: GitHTTPRoutes<BasicRequestContext>? = nil,
                               api: (@Sendable (Router<BasicRequestContext>) -> Void)? = nil, host: String, port: Int, logger: Logger,
                               limits: ConnectionLimits = ConnectionLimits(), tls: TLSListener? = nil,
                               front: @Sendable (_ tls: Bool) -> [Front] = { _ in [] },
                               onRunning: @escaping @Sendable (String) async -> Void) throws -> [any Service] {
        let count = ConnectionLimits.Count()
        let uploads = RegistryUploads(keg: keg)
        let http1 = HTTPServerBuilder.http1(configuration: .init(additionalChannelHandlers: [ConnectionGuard(limits: limits, count: count)],
                                                                 idleTimeout: limits.idleTimeout))
        var apps: [any Service] = [Application(
            router: router(keg: keg, refs: refs, tokens: tokens, git: git, api: api, uploads: uploads, caPEM: tls?.identity.caPEM,
                           front: front(false)),
            server: http1,
            configuration: .init(address: .hostname(host, port: port), serverName: "kbuild"),
            services: [UploadSweeper(uploads: uploads)],
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                await onRunning("http://\(host):\(bound)")
            },
            logger: logger
        )]
        if let tls {
            apps.append(Application(
                router: router(keg: keg, refs: refs, tokens: tokens, git: git, api: api, uploads: uploads, caPEM: tls.identity.caPEM,
                               front: front(true)),
                server: try .tls(http1, tlsConfiguration: tls.identity.configuration()),
                configuration: .init(address: .hostname(tls.host, port: tls.port), serverName: "kbuild"),
                onServerRunning: { channel in
                    let bound = channel.localAddress?.port ?? tls.port
                    await tls.onRunning("https://\(tls.host):\(bound)")
                },
                logger: logger
            ))
        }
        return apps
    }
}

/// Drops idle registry uploads every 30 s, so what they hold goes even when
/// no new upload starts.
struct UploadSweeper: Service {
    let uploads: RegistryUploads
    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(30))
                    await uploads.sweep()
                }
            }
        } catch is CancellationError {}
    }
}

/// Marks every answer under `/api/` with the API's version (`Kbuild-API: 1`),
/// errors and refusals too, so a client knows it reached a kbuild of its
/// version, another version, or something that is not kbuild at all.
struct APIVersionMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/api/") else { return try await next(request, context) }
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            // The router's own answers (no such route: 404, 405) carry the version too.
            response = try error.response(from: request, context: context)
        }
        response.headers[HTTPField.Name(API.versionHeader)!] = String(API.version)
        return response
    }
}
