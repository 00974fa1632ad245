public import HTTPTypes
public import KbuildState

/// What a build worker's join token may do (`kbuild workers:join-token NAME`):
/// pure functions of the request and the ref, so the rules are read and
/// tested in one place; `StateRoutes` checks what each write points at.
///
/// A worker is build infrastructure, trusted as a build machine is: it reads
/// any app's build inputs (the queued jobs, their sources, stacks and
/// buildpacks, build caches and dependency layers, any record and object by
/// KID) and writes build outputs (objects, its claims and results, caches
/// and dependency layers of the apps it is building, the live log of the
/// build it holds). It cannot read an app's config, releases, tokens or
/// nodes, deploy, or call any verb of the API.
public enum WorkerScope {
    /// The routes a worker token may call at all.
    public static func allows(method: HTTPRequest.Method, path: String) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if parts.count == 3, parts[0] == "v1", parts[1] == "objects" {
            return parts[2] == "missing" ? method == .post : [.get, .head, .put].contains(method)
        }
        // The live log of the build it holds (the handler checks the claim).
        if parts.count == 5, parts[0] == "api", parts[1] == "v1", parts[2] == "builds", parts[4] == "live-log" { return method == .put }
        guard parts.count >= 4, parts[0] == "api", parts[1] == "v1", parts[2] == "state" else { return false }
        let rest = parts.dropFirst(3).joined(separator: "/")
        switch method {
        case .get: return ["revision", "ref", "refs", "changes"].contains(rest) || (parts.count == 5 && parts[3] == "records")
        case .post: return ["cas", "records"].contains(rest)
        default: return false
        }
    }

    /// Whether a worker may read ref `name` (or list or follow a prefix: `mayRead(prefix)`).
    public static func mayRead(_ name: RefName) -> Bool {
        switch Schema.Key(name) {
        case .buildQueued, .buildClaim, .buildResult, .sharedDependency, .appDependency, .appField(_, .buildCache): return true
        default: return ["builds", "builds/queue", "builds/claims", "builds/results"].contains(name.rawValue)
        }
    }

    /// Whether a worker may change ref `name` at all (`StateRoutes` then checks it holds the build).
    public static func mayWrite(_ name: RefName) -> Bool {
        switch Schema.Key(name) {
        case .buildQueued, .buildClaim, .buildResult, .sharedDependency, .appDependency, .appField(_, .buildCache): return true
        default: return false
        }
    }
}
