import HTTPTypes

/// The dashboard's URL space on the API port, beside `/api/v1`, git's
/// `/APP.git`, the registry's `/v2` and the Keg's `/v1/objects`: which paths
/// are its pages, which are public (the login page and the static files), and
/// which an app token reaches (pure rules, checked by `TokenAuthMiddleware`
/// like the API's, so one table says who reaches what).
public enum DashboardPaths {
    /// The pages and actions of the dashboard (its session middleware turns a cookie into a token for these only).
    public static func isDashboard(_ path: String) -> Bool {
        ["/", "/login", "/logout", "/events", "/builds", "/nodes", "/trace"].contains(path)
            || path.hasPrefix("/apps/") || path.hasPrefix("/static/")
    }

    /// Served without a token: the login form and the files every page loads.
    public static func isPublic(_ path: String) -> Bool {
        path == "/login" || (path.hasPrefix("/static/") && !path.contains(".."))
    }

    /// What an app token may reach of the dashboard: the overview, builds
    /// and event stream (each filtered to its apps), its apps' pages and
    /// actions, logging out; not the nodes or trace pages (the admin's, as
    /// their API is). Nil for a path that is not the dashboard's.
    static func allows(apps: [String], method: HTTPRequest.Method, parts: [String]) -> Bool? {
        switch parts.first {
        case nil: return method == .get
        case "builds", "events": return parts.count == 1 ? method == .get : false
        case "logout": return parts.count == 1 && method == .post
        case "nodes", "trace": return false
        case "apps": return parts.count >= 2 && apps.contains(parts[1])
        default: return nil
        }
    }
}
