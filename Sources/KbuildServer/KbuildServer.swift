public import Hummingbird
public import Keg
public import Logging
public import KbuildState
import Foundation
import ServiceLifecycle
import HummingbirdCore
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

    static func router(keg: Keg, refs: any RefStore, tokens: [String], git: GitHTTPRoutes<BasicRequestContext>?,
                       api: (@Sendable (Router<BasicRequestContext>) -> Void)?, uploads: RegistryUploads) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: APIVersionMiddleware())
        router.add(middleware: TokenAuthMiddleware(tokens: tokens, appTokens: AppTokens(keg: keg, refs: refs)))
        router.get("/healthz") { _, _ in "ok\n" }
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

    /// The HTTP server as a `Service`, ready for a `ServiceGroup`. `onRunning`
    /// gets the base URL once the socket is bound (useful with port 0).
    public static func server(keg: Keg, refs: any RefStore, tokens: [String], git: GitHTTPRoutes<BasicRequestContext>? = nil,
                              api: (@Sendable (Router<BasicRequestContext>) -> Void)? = nil, host: String, port: Int, logger: Logger,
                              limits: ConnectionLimits = ConnectionLimits(),
                              onRunning: @escaping @Sendable (String) async -> Void) -> some ApplicationProtocol {
        let count = ConnectionLimits.Count()
        let uploads = RegistryUploads(keg: keg)
        return Application(
            router: router(keg: keg, refs: refs, tokens: tokens, git: git, api: api, uploads: uploads),
            server: .http1(configuration: .init(additionalChannelHandlers: [ConnectionGuard(limits: limits, count: count)],
                                                idleTimeout: limits.idleTimeout)),
            configuration: .init(address: .hostname(host, port: port), serverName: "kbuild"),
            services: [UploadSweeper(uploads: uploads)],
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                await onRunning("http://\(host):\(bound)")
            },
            logger: logger
        )
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
