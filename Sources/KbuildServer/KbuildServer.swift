public import Hummingbird
public import Keg
public import Logging
public import RefStore
import Foundation
import HummingbirdCore

/// The one HTTP server of a kbuild host: the Keg's objects, the registry and
/// git's smart HTTP, and the API (`api` registers its routes).
public enum KbuildHTTP {
    /// The request context of every route.
    public typealias Context = BasicRequestContext

    /// The router with every route and the token check in front of them.
    public static func router(keg: Keg, refs: any RefStore, tokens: [String], git: GitHTTPRoutes<BasicRequestContext>? = nil,
                              api: (@Sendable (Router<BasicRequestContext>) -> Void)? = nil) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: TokenAuthMiddleware(tokens: tokens, appTokens: AppTokens(keg: keg, refs: refs)))
        router.get("/healthz") { _, _ in "ok\n" }
        KegRoutes<BasicRequestContext>(keg: keg).register(on: router)
        RegistryRoutes<BasicRequestContext>(keg: keg, refs: refs).register(on: router)
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
        return Application(
            router: router(keg: keg, refs: refs, tokens: tokens, git: git, api: api),
            server: .http1(configuration: .init(additionalChannelHandlers: [ConnectionGuard(limits: limits, count: count)],
                                                idleTimeout: limits.idleTimeout)),
            configuration: .init(address: .hostname(host, port: port), serverName: "kbuild"),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                await onRunning("http://\(host):\(bound)")
            },
            logger: logger
        )
    }
}
