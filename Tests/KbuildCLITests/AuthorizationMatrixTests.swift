import Foundation
import Hummingbird
import KbuildCore
import KbuildServer
import KbuildSystem
import Keg
import KbuildState
import SQLiteState
import XCTest

/// Every route the server has, against a real `kbuild up`, with no token, a
/// wrong token, an app token for another app, the app token of the app, a
/// node's join token, and the admin token. The rows are checked against the route table the server
/// is built from (`KbuildSystem.routeTable`): a route added without a row
/// here fails this test.
final class AuthorizationMatrixTests: XCTestCase {
    /// What an app token may do on a route of its own app.
    enum Own { case allowed, forbidden }

    struct Row: Sendable {
        /// Concrete requests for the route (one route like `/v2/**` covers several paths): method, path for an app, body.
        var requests: @Sendable (String) -> [(method: String, path: String, body: String?)]
        /// What the app's own token gets.
        var own: Own
        /// Whether the path names an app (then another app's token gets 403); else it is the same for every token.
        var perApp: Bool
        /// What node n1's join token gets (for a path naming a node, n1's own).
        var node: Own = .forbidden
        /// What build worker w1's join token gets (for the row's request; what it reaches inside is checked after the table).
        var worker: Own = .forbidden
        /// A dashboard page or action: without any token a page sends the browser to log in (303) and an action is refused (403).
        var dashboard = false
        /// Served to everyone with this status whatever the token (the login form and the dashboard's static files).
        var publicCode: Int? = nil
        /// An answer that streams until the client goes (curl gives up after a moment and the status is what counts).
        var stream = false
    }

    /// A dashboard route: `own` for the app's token; a page without a login is sent to log in.
    static func page(_ requests: @escaping @Sendable (String) -> [(method: String, path: String, body: String?)], own: Own = .allowed,
                     perApp: Bool = true, stream: Bool = false) -> Row {
        Row(requests: requests, own: own, perApp: perApp, dashboard: true, stream: stream)
    }

    static let zeroKID = "K-" + String(repeating: "0", count: 64)
    static let zeroDigest = "sha256:" + String(repeating: "0", count: 64)

    /// One row per route of the route table.
    static let rows: [String: Row] = [
        "GET /healthz": Row(requests: { _ in [("GET", "/healthz", nil)] }, own: .allowed, perApp: false, node: .allowed, worker: .allowed),
        // The CA of the https port: public (a certificate), for a client to check against its pinned hash.
        "GET /tls/ca.crt": Row(requests: { _ in [("GET", "/tls/ca.crt", nil)] }, own: .allowed, perApp: false, node: .allowed, worker: .allowed),
        "GET /v1/objects/{kid}": Row(requests: { _ in [("GET", "/v1/objects/\(zeroKID)", nil)] }, own: .forbidden, perApp: false, worker: .allowed),
        "HEAD /v1/objects/{kid}": Row(requests: { _ in [("HEAD", "/v1/objects/\(zeroKID)", nil)] }, own: .forbidden, perApp: false, worker: .allowed),
        // What a build worker made, sent to the control plane: the admin's and a worker's (no kind: 400).
        "PUT /v1/objects/{kid}": Row(requests: { _ in [("PUT", "/v1/objects/\(zeroKID)", "x")] }, own: .forbidden, perApp: false, worker: .allowed),
        "POST /v1/objects/missing": Row(requests: { _ in [("POST", "/v1/objects/missing", "[]")] }, own: .forbidden, perApp: false, worker: .allowed),
        // A build's live log: only the worker holding its claim (w1 holds none here: 403; JoinTests writes one).
        "PUT /api/v1/builds/{build}/live-log": Row(requests: { _ in [("PUT", "/api/v1/builds/\(zeroKID)/live-log?offset=0", "x")] },
                                                   own: .forbidden, perApp: false),
        "POST /api/v1/workers/{worker}/join-token": Row(requests: { _ in [("POST", "/api/v1/workers/w1/join-token", "{}")] }, own: .forbidden, perApp: false),
        "GET /v2": Row(requests: { _ in [("GET", "/v2/", nil)] }, own: .allowed, perApp: false),
        "GET /v2/**": Row(requests: { app in [("GET", "/v2/\(app)/tags/list", nil), ("GET", "/v2/\(app)/manifests/latest", nil),
                                              ("GET", "/v2/\(app)/blobs/\(zeroDigest)", nil)] }, own: .allowed, perApp: true),
        "HEAD /v2/**": Row(requests: { app in [("HEAD", "/v2/\(app)/manifests/latest", nil), ("HEAD", "/v2/\(app)/blobs/\(zeroDigest)", nil)] },
                           own: .allowed, perApp: true),
        "POST /v2/**": Row(requests: { app in [("POST", "/v2/\(app)/blobs/uploads/", nil)] }, own: .forbidden, perApp: true),
        "PATCH /v2/**": Row(requests: { app in [("PATCH", "/v2/\(app)/blobs/uploads/nosuch", "x")] }, own: .forbidden, perApp: true),
        "PUT /v2/**": Row(requests: { app in [("PUT", "/v2/\(app)/manifests/latest", "{}")] }, own: .forbidden, perApp: true),
        "DELETE /v2/**": Row(requests: { app in [("DELETE", "/v2/\(app)/blobs/uploads/nosuch", nil)] }, own: .forbidden, perApp: true),
        "GET /{repo}/info/refs": Row(requests: { app in [("GET", "/\(app).git/info/refs?service=git-upload-pack", nil)] }, own: .allowed, perApp: true),
        "POST /{repo}/git-receive-pack": Row(requests: { app in [("POST", "/\(app).git/git-receive-pack", "0000")] }, own: .allowed, perApp: true),
        "POST /{repo}/git-upload-pack": Row(requests: { app in [("POST", "/\(app).git/git-upload-pack", "0000")] }, own: .allowed, perApp: true),
        "GET /api/v1/apps": Row(requests: { _ in [("GET", "/api/v1/apps", nil)] }, own: .allowed, perApp: false),
        "GET /api/v1/nodes": Row(requests: { _ in [("GET", "/api/v1/nodes", nil)] }, own: .forbidden, perApp: false),
        // An invalid name: the admin gets a 400 and nothing is made.
        "POST /api/v1/apps": Row(requests: { _ in [("POST", "/api/v1/apps", #"{"name":"-"}"#)] }, own: .forbidden, perApp: false),
        "GET /api/v1/ps": Row(requests: { _ in [("GET", "/api/v1/ps", nil)] }, own: .forbidden, perApp: false),
        // Trace may name any tenant's process (a PID, a KID, a commit): the admin's only.
        "GET /api/v1/trace": Row(requests: { app in [("GET", "/api/v1/trace?target=\(app)", nil)] }, own: .forbidden, perApp: false),
        "GET /api/v1/trace/diff": Row(requests: { app in [("GET", "/api/v1/trace/diff?target=\(app)@v1..v2", nil)] }, own: .forbidden, perApp: false),
        "GET /api/v1/trace/file": Row(requests: { app in [("GET", "/api/v1/trace/file?target=\(app)&path=Procfile", nil)] }, own: .forbidden, perApp: false),
        // The state layer: the admin's (and later a node's) only.
        "GET /api/v1/state/revision": Row(requests: { _ in [("GET", "/api/v1/state/revision", nil)] }, own: .forbidden, perApp: false, node: .allowed,
                                           worker: .allowed),
        "GET /api/v1/state/ref": Row(requests: { app in [("GET", "/api/v1/state/ref?name=apps/\(app)", nil)] }, own: .forbidden, perApp: false),
        "GET /api/v1/state/refs": Row(requests: { app in [("GET", "/api/v1/state/refs?prefix=apps/\(app)", nil)] }, own: .forbidden, perApp: false),
        "GET /api/v1/state/history": Row(requests: { app in [("GET", "/api/v1/state/history?name=apps/\(app)/release", nil)] },
                                        own: .forbidden, perApp: false),
        "GET /api/v1/state/changes": Row(requests: { _ in [("GET", "/api/v1/state/changes?after=0", nil)] }, own: .forbidden, perApp: false),
        "POST /api/v1/state/cas": Row(requests: { app in [("POST", "/api/v1/state/cas",
                                                           #"{"name":"pins/x","expecting":{"kind":"nonsense"},"actor":"t"}"#)] },
                                      own: .forbidden, perApp: false),
        "GET /api/v1/state/records/{kid}": Row(requests: { _ in [("GET", "/api/v1/state/records/\(zeroKID)", nil)] }, own: .forbidden, perApp: false,
                                                worker: .allowed),
        "POST /api/v1/state/records": Row(requests: { _ in [("POST", "/api/v1/state/records", "[]")] }, own: .forbidden, perApp: false, node: .allowed,
                                           worker: .allowed),
        "POST /api/v1/state/logs": Row(requests: { _ in [("POST", "/api/v1/state/logs", "release output")] }, own: .forbidden, perApp: false, node: .allowed),
        // A node's join token: the admin's to make (again for n1: 409, nothing made).
        "POST /api/v1/nodes/{node}/join-token": Row(requests: { _ in [("POST", "/api/v1/nodes/n1/join-token", "{}")] }, own: .forbidden, perApp: false),
        // nodes:drain and undrain: the admin's (n1 has not registered: a 404, nothing drained).
        "POST /api/v1/nodes/{node}/drain": Row(requests: { _ in [("POST", "/api/v1/nodes/n1/drain", "{}")] }, own: .forbidden, perApp: false),
        "DELETE /api/v1/nodes/{node}/drain": Row(requests: { _ in [("DELETE", "/api/v1/nodes/n1/drain", nil)] }, own: .forbidden, perApp: false),
        // A joined node's logs: n1's token writes n1's copies (this one the admin's request has just made; starting
        // one only for a process of its assignment, and never another node's, is checked after the table).
        "PUT /api/v1/nodes/{node}/logs/{file}": Row(requests: { _ in [("PUT", "/api/v1/nodes/n1/logs/mine.web.1-x.log?offset=0", "line\n")] },
                                                   own: .forbidden, perApp: false, node: .allowed),
        "GET /api/v1/apps/{app}": Row(requests: { app in [("GET", "/api/v1/apps/\(app)", nil)] }, own: .allowed, perApp: true),
        // Without confirm=APP: the admin gets a 400 and nothing is destroyed.
        "DELETE /api/v1/apps/{app}": Row(requests: { app in [("DELETE", "/api/v1/apps/\(app)", nil)] }, own: .forbidden, perApp: true),
        "GET /api/v1/apps/{app}/config": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/config", nil)] }, own: .allowed, perApp: true),
        "PATCH /api/v1/apps/{app}/config": Row(requests: { app in [("PATCH", "/api/v1/apps/\(app)/config", #"{"set":{},"unset":[]}"#)] },
                                              own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/releases": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/releases", nil)] }, own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/releases/{version}": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/releases/v1", nil)] }, own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/releases/{version}/output": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/releases/v1/output", nil)] }, own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/releases/rollback": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/releases/rollback", "{}")] },
                                                        own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/ps": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/ps", nil)] }, own: .allowed, perApp: true),
        "PATCH /api/v1/apps/{app}/formation": Row(requests: { app in [("PATCH", "/api/v1/apps/\(app)/formation", #"{"changes":[]}"#)] },
                                                 own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/ps/restart": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/ps/restart", "{}")] }, own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/logs": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/logs", nil)] }, own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/limits": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/limits", nil)] }, own: .allowed, perApp: true),
        "PUT /api/v1/apps/{app}/limits": Row(requests: { app in [("PUT", "/api/v1/apps/\(app)/limits", #"{"builds":0}"#)] }, own: .forbidden, perApp: true),
        // Add-ons: an app's own (attaching another app's add-on is checked in StatefulAddonTests: the answer is 404, as for none).
        "GET /api/v1/apps/{app}/addons": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/addons", nil)] }, own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/addons": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/addons", #"{"kind":"mysql"}"#)] }, own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/addons/{addon}": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/addons/none", nil)] }, own: .allowed, perApp: true),
        "DELETE /api/v1/apps/{app}/addons/{addon}": Row(requests: { app in [("DELETE", "/api/v1/apps/\(app)/addons/none?confirm=none", nil)] },
                                                        own: .allowed, perApp: true),
        // Backups of an add-on the app has or is attached to (none here: 404 for the own token).
        "GET /api/v1/apps/{app}/addons/{addon}/backups": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/addons/none/backups", nil)] },
                                                             own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/addons/{addon}/backups": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/addons/none/backups", "{}")] },
                                                              own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/addons/{addon}/backups/{backup}/restore": Row(requests: { app in
            [("POST", "/api/v1/apps/\(app)/addons/none/backups/b001/restore?confirm=none", "{}")] }, own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/addons/{addon}/backups/{backup}/dump": Row(requests: { app in
            [("GET", "/api/v1/apps/\(app)/addons/none/backups/b001/dump", nil)] }, own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/addons/{addon}/backups/import": Row(requests: { app in
            [("POST", "/api/v1/apps/\(app)/addons/none/backups/import", "PGDMP")] }, own: .allowed, perApp: true),
        "DELETE /api/v1/apps/{app}/addons/{addon}/backups/{backup}": Row(requests: { app in
            [("DELETE", "/api/v1/apps/\(app)/addons/none/backups/b001?confirm=none", nil)] }, own: .allowed, perApp: true),
        "PUT /api/v1/apps/{app}/addons/{addon}/schedule": Row(requests: { app in
            [("PUT", "/api/v1/apps/\(app)/addons/none/schedule", #"{"at":"02:00"}"#)] }, own: .allowed, perApp: true),
        "DELETE /api/v1/apps/{app}/addons/{addon}/schedule": Row(requests: { app in
            [("DELETE", "/api/v1/apps/\(app)/addons/none/schedule", nil)] }, own: .allowed, perApp: true),
        // A new password and a new major version: the owner's (another app attached to it gets 403, checked in StatefulAddonTests).
        "POST /api/v1/apps/{app}/addons/{addon}/credentials": Row(requests: { app in
            [("POST", "/api/v1/apps/\(app)/addons/none/credentials", "{}")] }, own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/addons/{addon}/run": Row(requests: { app in
            [("POST", "/api/v1/apps/\(app)/addons/none/run", #"{"command":["true"]}"#)] }, own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/addons/{addon}/upgrade": Row(requests: { app in
            [("POST", "/api/v1/apps/\(app)/addons/none/upgrade", #"{"version":"17"}"#)] }, own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/attachments": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/attachments", #"{"addon":"none"}"#)] },
                                                   own: .allowed, perApp: true),
        "DELETE /api/v1/apps/{app}/attachments/{name}": Row(requests: { app in [("DELETE", "/api/v1/apps/\(app)/attachments/NONE", nil)] },
                                                            own: .allowed, perApp: true),
        // Volumes: an app's own (its limit, `apps:limits --volumes`, bounds what its token may make).
        "GET /api/v1/apps/{app}/volumes": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/volumes", nil)] }, own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/volumes": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/volumes", #"{"name":"-","size":0}"#)] },
                                               own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/volumes/{volume}": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/volumes/none", nil)] }, own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/volumes/{volume}/mount": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/volumes/none/mount", #"{"path":"/data"}"#)] },
                                                              own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/volumes/{volume}/unmount": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/volumes/none/unmount", "{}")] },
                                                                own: .allowed, perApp: true),
        "DELETE /api/v1/apps/{app}/volumes/{volume}": Row(requests: { app in [("DELETE", "/api/v1/apps/\(app)/volumes/none?confirm=none", nil)] },
                                                          own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/router": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/router", nil)] }, own: .allowed, perApp: true),
        // An invalid timeout: whoever may gets a 400 and nothing is set.
        "PUT /api/v1/apps/{app}/router": Row(requests: { app in [("PUT", "/api/v1/apps/\(app)/router", #"{"requestTimeout":0}"#)] }, own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/metrics": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/metrics", nil)] }, own: .allowed, perApp: true),
        // Every app's series for the admin, an app token's apps' only (RouterEndToEndTests checks which).
        "GET /metrics": Row(requests: { _ in [("GET", "/metrics", nil)] }, own: .allowed, perApp: false),
        "GET /api/v1/apps/{app}/certs": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/certs", nil)] }, own: .allowed, perApp: true),
        // Not a certificate: whoever may gets a 400 and nothing is kept.
        "POST /api/v1/apps/{app}/certs": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/certs", #"{"chain":"x","key":"y"}"#)] },
                                             own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/certs/generate": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/certs/generate", "{}")] }, own: .allowed, perApp: true),
        "DELETE /api/v1/apps/{app}/certs/{id}": Row(requests: { app in [("DELETE", "/api/v1/apps/\(app)/certs/0000000000000000", nil)] },
                                                    own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/domains": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/domains", nil)] }, own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/domains": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/domains", #"{"domain":"-"}"#)] }, own: .allowed, perApp: true),
        "DELETE /api/v1/apps/{app}/domains/{domain}": Row(requests: { app in [("DELETE", "/api/v1/apps/\(app)/domains/none.example.com", nil)] },
                                                        own: .allowed, perApp: true),
        // apps:set with no setting: the admin gets a 400 and nothing changes.
        "PATCH /api/v1/apps/{app}": Row(requests: { app in [("PATCH", "/api/v1/apps/\(app)", "{}")] }, own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/build-cache/purge": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/build-cache/purge", "{}")] },
                                                       own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/images": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/images", nil)] }, own: .allowed, perApp: true),
        // Build logs and tokens: the admin's.
        "GET /api/v1/builds/{build}/log": Row(requests: { _ in [("GET", "/api/v1/builds/\(zeroKID)/log", nil)] }, own: .forbidden, perApp: false),
        // SSH keys and buildpacks: the admin's (removing a key that is not there: 404).
        "GET /api/v1/keys": Row(requests: { _ in [("GET", "/api/v1/keys", nil)] }, own: .forbidden, perApp: false),
        "POST /api/v1/keys": Row(requests: { _ in [("POST", "/api/v1/keys", #"{"publicKey":"x","name":"x"}"#)] }, own: .forbidden, perApp: false),
        "DELETE /api/v1/keys/{name}": Row(requests: { _ in [("DELETE", "/api/v1/keys/nosuch", nil)] }, own: .forbidden, perApp: false),
        "GET /api/v1/buildpacks": Row(requests: { _ in [("GET", "/api/v1/buildpacks", nil)] }, own: .forbidden, perApp: false),
        "POST /api/v1/buildpacks": Row(requests: { _ in [("POST", "/api/v1/buildpacks", "{}")] }, own: .forbidden, perApp: false),
        "GET /api/v1/tokens": Row(requests: { _ in [("GET", "/api/v1/tokens", nil)] }, own: .forbidden, perApp: false),
        "POST /api/v1/tokens": Row(requests: { _ in [("POST", "/api/v1/tokens", #"{"name":"-","apps":[]}"#)] }, own: .forbidden, perApp: false),
        "DELETE /api/v1/tokens/{name}": Row(requests: { _ in [("DELETE", "/api/v1/tokens/nosuch", nil)] }, own: .forbidden, perApp: false),
        // The git hook hands a push to the control plane with the admin token; an app token pushes with git only
        // (a push names a tree in the Keg, so one that could post it could deploy another tenant's source).
        // The admin's body is not a push: a 400, nothing deployed.
        "GET /api/v1/apps/{app}/push-terms": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/push-terms", nil)] }, own: .forbidden, perApp: true),
        "POST /api/v1/apps/{app}/pushes": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/pushes", #"{"source":{}}"#)] }, own: .forbidden, perApp: true),
        "POST /api/v1/apps/{app}/run": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/run", #"{"command":["true"]}"#)] }, own: .allowed, perApp: true),
        // Builds across apps, the event stream and the revision (filtered to an app token's apps), a one-time dashboard login.
        "GET /api/v1/builds": Row(requests: { _ in [("GET", "/api/v1/builds", nil)] }, own: .allowed, perApp: false),
        "GET /api/v1/events": Row(requests: { _ in [("GET", "/api/v1/events", nil)] }, own: .allowed, perApp: false, stream: true),
        "GET /api/v1/revision": Row(requests: { _ in [("GET", "/api/v1/revision", nil)] }, own: .allowed, perApp: false),
        "POST /api/v1/dashboard/login-codes": Row(requests: { _ in [("POST", "/api/v1/dashboard/login-codes", "{}")] }, own: .allowed, perApp: false),
        // An app's builds (none here: 404 for one), its config values shown on purpose, a release's diff (v1 of none: 404).
        "GET /api/v1/apps/{app}/builds": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/builds", nil)] }, own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/builds/{build}": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/builds/\(zeroKID)", nil)] },
                                                    own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/builds/{build}/log": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/builds/\(zeroKID)/log", nil)] },
                                                        own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/builds/{build}/cancel": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/builds/\(zeroKID)/cancel", "{}")] },
                                                            own: .allowed, perApp: true),
        "POST /api/v1/apps/{app}/config/reveal": Row(requests: { app in [("POST", "/api/v1/apps/\(app)/config/reveal", "{}")] }, own: .allowed, perApp: true),
        "GET /api/v1/apps/{app}/releases/{version}/diff": Row(requests: { app in [("GET", "/api/v1/apps/\(app)/releases/v2/diff", nil)] },
                                                             own: .allowed, perApp: true),
        // The dashboard: public login form and static files; pages and actions behind the same token rules as the API.
        "GET /login": Row(requests: { _ in [("GET", "/login", nil)] }, own: .allowed, perApp: false, publicCode: 200),
        "POST /login": Row(requests: { _ in [("POST", "/login", "token=wrong")] }, own: .allowed, perApp: false, publicCode: 401),
        "GET /static/kbuild.css": Row(requests: { _ in [("GET", "/static/kbuild.css", nil)] }, own: .allowed, perApp: false, publicCode: 200),
        "GET /static/kbuild.js": Row(requests: { _ in [("GET", "/static/kbuild.js", nil)] }, own: .allowed, perApp: false, publicCode: 200),
        "POST /logout": page({ _ in [("POST", "/logout", "")] }, perApp: false),
        "GET /": page({ _ in [("GET", "/", nil)] }, perApp: false),
        "GET /events": page({ _ in [("GET", "/events", nil)] }, perApp: false, stream: true),
        "GET /builds": page({ _ in [("GET", "/builds", nil)] }, perApp: false),
        "GET /nodes": page({ _ in [("GET", "/nodes", nil)] }, own: .forbidden, perApp: false),
        "GET /trace": page({ app in [("GET", "/trace?q=\(app)", nil)] }, own: .forbidden, perApp: false),
        "GET /apps/{app}": page({ app in [("GET", "/apps/\(app)", nil)] }),
        "GET /apps/{app}/releases/{version}": page({ app in [("GET", "/apps/\(app)/releases/1", nil)] }),
        "GET /apps/{app}/builds/{build}": page({ app in [("GET", "/apps/\(app)/builds/\(zeroKID)", nil)] }),
        "GET /apps/{app}/builds/{build}/log": page({ app in [("GET", "/apps/\(app)/builds/\(zeroKID)/log", nil)] }),
        "GET /apps/{app}/logs": page({ app in [("GET", "/apps/\(app)/logs", nil)] }),
        "GET /apps/{app}/logs/stream": page({ app in [("GET", "/apps/\(app)/logs/stream", nil)] }, stream: true),
        "GET /apps/{app}/logs/download": page({ app in [("GET", "/apps/\(app)/logs/download", nil)] }),
        // Actions with no fields: a 400 page for whoever may act, nothing changed.
        "POST /apps/{app}/scale": page({ app in [("POST", "/apps/\(app)/scale", "")] }),
        "POST /apps/{app}/config": page({ app in [("POST", "/apps/\(app)/config", "")] }),
        "POST /apps/{app}/config/unset": page({ app in [("POST", "/apps/\(app)/config/unset", "")] }),
        "POST /apps/{app}/config/reveal": page({ app in [("POST", "/apps/\(app)/config/reveal", "")] }),
        "POST /apps/{app}/restart": page({ app in [("POST", "/apps/\(app)/restart", "type=nosuch")] }),
        "POST /apps/{app}/rollback": page({ app in [("POST", "/apps/\(app)/rollback", "")] }),
        "POST /apps/{app}/domains": page({ app in [("POST", "/apps/\(app)/domains", "")] }),
        "POST /apps/{app}/domains/remove": page({ app in [("POST", "/apps/\(app)/domains/remove", "")] }),
        "POST /apps/{app}/builds/{build}/cancel": page({ app in [("POST", "/apps/\(app)/builds/\(zeroKID)/cancel", "")] }),
    ]

    func testEveryRouteHasARow() throws {
        let dir = try tempDir(self, "routes")
        let dataDir = DataDir(root: URL(fileURLWithPath: dir))
        try dataDir.create()
        let table = KbuildSystem.routeTable(keg: try Keg(dataDir: dataDir), refs: try SQLiteRefStore(path: dataDir.refStore.path), dataDir: dataDir)
        XCTAssertGreaterThan(table.count, 20, "\(table)")
        let missing = table.filter { Self.rows[$0] == nil }
        XCTAssertEqual(missing, [], "routes without a row in the authorization matrix: add one")
        let stale = Self.rows.keys.filter { !table.contains($0) }.sorted()
        XCTAssertEqual(stale, [], "rows for routes that do not exist")
    }

    /// A slash more or less never changes what an app token may do: the rule
    /// sees the path as the router routes it.
    func testExtraSlashesChangeNothing() {
        let apps = ["mine"]
        for (method, path, allowed) in [
            (HTTPRequest.Method.put, "/api/v1/apps/mine/limits", false), (.put, "/api/v1/apps/mine/limits/", false),
            (.put, "/api/v1/apps/mine//limits", false), (.put, "//api/v1/apps/mine/limits", false),
            (.delete, "/api/v1/apps/mine", false), (.delete, "/api/v1/apps/mine/", false), (.delete, "/api//v1/apps/mine", false),
            (.get, "/api/v1/apps/mine/limits/", true), (.get, "/api/v1/apps//mine/config", true),
            (.get, "/api/v1/apps/theirs/", false), (.get, "/v2/", true), (.get, "/v2//theirs/manifests/latest", false),
            (.get, "/v2/mine/manifests/latest", true), (.put, "/v2/mine/manifests/latest", false),
            (.get, "/api/v1/nodes/", false), (.get, "/api/v1/apps/", true),
            (.post, "/api/v1/apps/mine/pushes", false), (.post, "/api/v1/apps/mine//pushes/", false), (.get, "/api/v1/apps/mine/push-terms", false),
        ] {
            XCTAssertEqual(TokenAuthMiddleware<BasicRequestContext>.allows(apps: apps, method: method, path: path), allowed, "\(method) \(path)")
        }
    }

    func testEveryRouteWithEveryKindOfToken() throws {
        let data = try makeData("authz")
        let server = try startKbuildUp(self, data: data)
        for app in ["mine", "theirs"] { XCTAssertEqual(try kbuild(["apps:create", app, "--stack", "busybox"], dataDir: data).status, 0) }
        let made = try kbuild(["tokens:create", "mate", "--app", "mine"], dataDir: data)
        XCTAssertEqual(made.status, 0, made.stderr)
        let appToken = trimmed(made.stdout)
        let joined = try kbuild(["nodes:join-token", "n1"], dataDir: data)
        XCTAssertEqual(joined.status, 0, joined.stderr)
        let nodeToken = try XCTUnwrap(joined.stdout.split(separator: " ").first { $0.hasPrefix("kbn_") }.map(String.init), joined.stdout)
        let workerJoined = try kbuild(["workers:join-token", "w1"], dataDir: data)
        XCTAssertEqual(workerJoined.status, 0, workerJoined.stderr)
        XCTAssertTrue(workerJoined.stdout.hasPrefix("kbuild worker --join https://") && workerJoined.stdout.hasSuffix(" --name w1\n"), workerJoined.stdout)
        let workerToken = try XCTUnwrap(workerJoined.stdout.split(separator: " ").first { $0.hasPrefix("kbw_") }.map(String.init), workerJoined.stdout)

        func status(_ method: String, _ path: String, body: String?, token: String?, stream: Bool = false) throws -> Int {
            var args = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", stream ? "1" : "20", "-X", method]
            if method == "HEAD" { args = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "-I"] }
            if let token { args += ["-H", "Authorization: Bearer \(token)"] }
            if let body { args += ["-H", "Content-Type: application/json", "--data-binary", body] }
            return Int(try sh("/usr/bin/curl", args + [server.url + path]).stdout) ?? -1
        }
        var checked = 0
        for (route, row) in Self.rows.sorted(by: { $0.key < $1.key }) {
            for (method, path, body) in row.requests("mine") {
                let what = "\(route): \(method) \(path)"
                if let code = row.publicCode {
                    for token in [nil, "wrong", appToken, nodeToken, workerToken, server.token] as [String?] {
                        XCTAssertEqual(try status(method, path, body: body, token: token, stream: row.stream), code, "\(what) (public) with token \(token ?? "none")")
                    }
                    checked += 1
                    continue
                }
                let open = route == "GET /healthz" || route == "GET /tls/ca.crt"
                // No token, a wrong one, a made-up app token: 401 (healthz answers everyone; a dashboard page without
                // any token sends the browser to log in, an action without one is refused).
                for token in [nil, "wrong", "kbt_" + String(repeating: "a", count: 40)] as [String?] {
                    let code = try status(method, path, body: body, token: token, stream: row.stream)
                    let want = open ? 200 : row.dashboard && token == nil ? (method == "GET" ? 303 : 403) : 401
                    XCTAssertEqual(code, want, "\(what) with token \(token ?? "none")")
                }
                // The admin: never 401 or 403.
                let admin = try status(method, path, body: body, token: server.token, stream: row.stream)
                XCTAssertFalse([401, 403].contains(admin), "\(what) as admin: \(admin)")
                // The app's own token.
                let own = try status(method, path, body: body, token: appToken, stream: row.stream)
                switch row.own {
                case .allowed: XCTAssertFalse([401, 403].contains(own), "\(what) with the app's token: \(own)")
                case .forbidden: XCTAssertEqual(own, 403, "\(what) with the app's token")
                }
                // Node n1's join token.
                let node = try status(method, path, body: body, token: nodeToken, stream: row.stream)
                switch row.node {
                case .allowed: XCTAssertFalse([401, 403].contains(node), "\(what) with a node's join token: \(node)")
                case .forbidden: XCTAssertEqual(node, 403, "\(what) with a node's join token")
                }
                // Build worker w1's join token.
                let worker = try status(method, path, body: body, token: workerToken, stream: row.stream)
                switch row.worker {
                case .allowed: XCTAssertFalse([401, 403].contains(worker), "\(what) with a worker's join token: \(worker)")
                case .forbidden: XCTAssertEqual(worker, 403, "\(what) with a worker's join token")
                }
                checked += 1
            }
            // Another app's routes with this app's token: 403, whether or not that app exists.
            if row.perApp {
                for other in ["theirs", "nosuch"] {
                    for (method, path, body) in row.requests(other) {
                        XCTAssertEqual(try status(method, path, body: body, token: appToken, stream: row.stream), 403,
                                       "\(route): \(method) \(path) with another app's token")
                    }
                }
            }
        }
        XCTAssertGreaterThan(checked, 30)

        // What a node's token reaches inside the routes it may call: its own node's part, nothing of another's.
        for (method, path, body, code) in [
            ("GET", "/api/v1/state/ref?name=nodes/n1/assignment", nil, 404), ("GET", "/api/v1/state/ref?name=nodes/n2/assignment", nil, 403),
            ("GET", "/api/v1/state/ref?name=apps/mine/config", nil, 403), ("GET", "/api/v1/state/changes?after=0&prefix=nodes/n1", nil, 200),
            ("GET", "/api/v1/state/changes?after=0&prefix=nodes/n2", nil, 403), ("GET", "/api/v1/state/changes?after=0&prefix=nodes", nil, 403),
            ("POST", "/api/v1/state/cas", #"{"name":"nodes/n2/status","kid":"\#(Self.zeroKID)","expecting":{"kind":"any"},"actor":"agent n1"}"#, 403),
            ("POST", "/api/v1/state/cas", #"{"name":"apps/mine/release","kid":"\#(Self.zeroKID)","expecting":{"kind":"any"},"actor":"agent n1"}"#, 403),
            ("PUT", "/api/v1/nodes/n2/logs/mine.web.1-x.log?offset=0", "x", 403), ("PUT", "/api/v1/nodes/n1/logs/%2e%2e?offset=0", "x", 400),
            ("PUT", "/api/v1/nodes/n1/logs/a%2Fb.log?offset=0", "x", 400), ("GET", "/api/v1/nodes/n1/logs/mine.web.1-x.log", nil, 403),
        ] as [(String, String, String?, Int)] {
            XCTAssertEqual(try status(method, path, body: body, token: nodeToken), code, "\(method) \(path) with node n1's token")
        }
        // A copy that exists (the admin's PUT above made it) n1 may append to; it may start none for a process it does not run.
        XCTAssertEqual(try status("PUT", "/api/v1/nodes/n1/logs/mine.web.1-x.log?offset=5", body: "more\n", token: nodeToken), 200)
        XCTAssertEqual(try String(contentsOfFile: data + "/nodes/n1/logs/mine.web.1-x.log", encoding: .utf8), "line\nmore\n")
        XCTAssertEqual(try status("PUT", "/api/v1/nodes/n1/logs/theirs.web.1-y.log?offset=0", body: "forged\n", token: nodeToken), 403)
        XCTAssertFalse(FileManager.default.fileExists(atPath: data + "/nodes/n1/logs/theirs.web.1-y.log"))

        // What n1 points its refs at must be a record of the ref's kind naming n1: not another node's identity, not some other record.
        func store(_ json: String) throws -> String {
            let r = try sh("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer \(nodeToken)", "--data-binary", json, server.url + "/api/v1/state/records"])
            return trimmed(r.stdout).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        let node = #"{"kind":"kbuild.node/v1","name":"NAME","address":"127.0.0.1","capacity":{"memory":1,"cpus":1},"network":"host","agentPID":1,"startedAt":"2026-01-01T00:00:00Z"}"#
        let asN2 = try store(node.replacingOccurrences(of: "NAME", with: "n2")), asN1 = try store(node.replacingOccurrences(of: "NAME", with: "n1"))
        let other = try store(#"{"kind":"kbuild.config/v1","vars":{"A":"b"}}"#)
        func cas(_ name: String, _ kid: String?) throws -> Int {
            let value = kid.map { #""kid":"\#($0)","# } ?? ""
            return try status("POST", "/api/v1/state/cas", body: #"{"name":"\#(name)",\#(value)"expecting":{"kind":"any"},"actor":"agent n1"}"#, token: nodeToken)
        }
        XCTAssertEqual(try cas("nodes/n1", asN2), 403, "n1 registered as n2")
        XCTAssertEqual(try cas("nodes/n1", other), 400, "n1's registration pointed at a config record")
        XCTAssertEqual(try cas("nodes/n1/status", asN1), 400, "a node record as n1's status")
        XCTAssertEqual(try cas("nodes/n1", nil), 403, "n1 deleted its registration")
        XCTAssertEqual(try cas("nodes/n1", asN1), 200)
        // And then reads it back (a ref it may read names it); the config record it stored, no.
        XCTAssertEqual(try status("GET", "/api/v1/state/records/\(asN1)", body: nil, token: nodeToken), 200)
        XCTAssertEqual(try status("GET", "/api/v1/state/records/\(other)", body: nil, token: nodeToken), 403)

        // A token made for one address: the node registers that one only, and reports its processes nowhere else.
        let pinned = try kbuild(["nodes:join-token", "n3", "--address", "10.9.9.9"], dataDir: data)
        XCTAssertEqual(pinned.status, 0, pinned.stderr)
        let n3 = try XCTUnwrap(pinned.stdout.split(separator: " ").first { $0.hasPrefix("kbn_") }.map(String.init))
        XCTAssertTrue(pinned.stdout.hasSuffix(" --name n3 --address 10.9.9.9\n"), pinned.stdout)
        let n3Node = #"{"kind":"kbuild.node/v1","name":"n3","address":"ADDR","capacity":{"memory":1,"cpus":1},"network":"host","agentPID":1,"startedAt":"2026-01-01T00:00:00Z"}"#
        func casAsN3(_ name: String, _ json: String) throws -> Int {
            let stored = try sh("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer \(n3)", "--data-binary", json, server.url + "/api/v1/state/records"])
            let kid = trimmed(stored.stdout).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            return try status("POST", "/api/v1/state/cas", body: #"{"name":"\#(name)","kid":"\#(kid)","expecting":{"kind":"any"},"actor":"agent n3"}"#, token: n3)
        }
        XCTAssertEqual(try casAsN3("nodes/n3", n3Node.replacingOccurrences(of: "ADDR", with: "127.0.0.1")), 403, "n3 registered another address")
        XCTAssertEqual(try casAsN3("nodes/n3", n3Node.replacingOccurrences(of: "ADDR", with: "10.9.9.9")), 200)
        let report = #"{"kind":"kbuild.node-status/v1","node":"n3","at":"2026-01-01T00:00:00Z","lease":10,"processes":[{"id":"mine.web.1-x","app":"mine","type":"web","name":"web.1","state":"healthy","address":"ADDR","port":80,"restarts":0,"since":"2026-01-01T00:00:00Z"}]}"#
        XCTAssertEqual(try casAsN3("nodes/n3/status", report.replacingOccurrences(of: "ADDR", with: "127.0.0.1")), 403, "a process reported elsewhere")
        XCTAssertEqual(try casAsN3("nodes/n3/status", report.replacingOccurrences(of: "ADDR", with: "10.9.9.9")), 200)
        XCTAssertEqual(try kbuild(["nodes:join-token", "n4", "--address", "not-an-ip"], dataDir: data).status, 1)
        // Revoked: 401 at once (within the token cache's second).
        XCTAssertEqual(try kbuild(["tokens:revoke", "node-n1"], dataDir: data).status, 0)
        usleep(1_100_000)
        XCTAssertEqual(try status("GET", "/api/v1/state/revision", body: nil, token: nodeToken), 401)

        try checkWorkerReach(server: server, data: data, token: workerToken) { try status($0, $1, body: $2, token: $3) }
    }

    /// What a build worker's token reaches inside the routes it may call: the build refs, only for builds it holds;
    /// objects only when they check out against their KIDs.
    func checkWorkerReach(server: KbuildServer, data: String, token: String,
                          status: (String, String, String?, String?) throws -> Int) throws {
        let zero = Self.zeroKID, hex = String(repeating: "0", count: 64)
        for (method, path, body, code) in [
            ("GET", "/api/v1/state/ref?name=builds/queue/\(hex)", nil, 404), ("GET", "/api/v1/state/ref?name=apps/mine/config", nil, 403),
            ("GET", "/api/v1/state/ref?name=apps/mine/build-cache", nil, 404), ("GET", "/api/v1/state/ref?name=nodes/n1/assignment", nil, 403),
            ("GET", "/api/v1/state/refs?prefix=builds/queue", nil, 200), ("GET", "/api/v1/state/refs", nil, 403),
            ("GET", "/api/v1/state/refs?prefix=apps", nil, 403), ("GET", "/api/v1/state/changes?after=0&prefix=builds/queue", nil, 200),
            ("GET", "/api/v1/state/changes?after=0", nil, 403), ("GET", "/api/v1/state/history?name=builds/queue/\(hex)", nil, 403),
            ("POST", "/api/v1/state/cas", #"{"name":"apps/mine/release","kid":"\#(zero)","expecting":{"kind":"any"},"actor":"w1"}"#, 403),
            ("POST", "/api/v1/state/cas", #"{"name":"builds/queue/\#(hex)","kid":"\#(zero)","expecting":{"kind":"any"},"actor":"w1"}"#, 403),
            ("POST", "/api/v1/state/cas", #"{"name":"apps/mine/build-cache","kid":"\#(zero)","expecting":{"kind":"any"},"actor":"w1"}"#, 403),
            ("POST", "/api/v1/state/cas", #"{"name":"builds/results/\#(hex)","expecting":{"kind":"any"},"actor":"w1"}"#, 403),
            ("PUT", "/api/v1/builds/\(zero)/live-log?offset=0", "x", 403), ("GET", "/api/v1/apps", nil, 403),
            ("POST", "/api/v1/apps/mine/run", #"{"command":["true"]}"#, 403), ("PUT", "/api/v1/nodes/n1/logs/mine.web.1-x.log?offset=0", "x", 403),
        ] as [(String, String, String?, Int)] {
            XCTAssertEqual(try status(method, path, body, token), code, "\(method) \(path) with worker w1's token")
        }
        // A claim is its own, on a queued build, never over a live one of another worker.
        func store(_ json: String) throws -> String {
            let r = try sh("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer \(token)", "--data-binary", json, server.url + "/api/v1/state/records"])
            return trimmed(r.stdout).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        let later = Date().timeIntervalSince1970 + 10
        let asW2 = try store(#"{"kind":"kbuild.build.claim/v1","build":"\#(zero)","worker":"w2","expires":\#(later)}"#)
        let asW1 = try store(#"{"kind":"kbuild.build.claim/v1","build":"\#(zero)","worker":"w1","expires":\#(later)}"#)
        let forever = try store(#"{"kind":"kbuild.build.claim/v1","build":"\#(zero)","worker":"w1","expires":\#(later + 86400)}"#)
        func claim(_ kid: String) throws -> Int {
            try status("POST", "/api/v1/state/cas", #"{"name":"builds/claims/\#(hex)","kid":"\#(kid)","expecting":{"kind":"any"},"actor":"w1"}"#, token)
        }
        XCTAssertEqual(try claim(asW2), 403, "w1 claimed as w2")
        XCTAssertEqual(try claim(asW1), 403, "w1 claimed a build nobody queued")
        XCTAssertEqual(try claim(forever), 403, "w1 gave itself a day's lease")

        // Objects: a file whose bytes hash to its KID is kept; other bytes, a tree naming what is not here, an unknown kind are not.
        func put(_ kid: String, kind: String?, _ body: String) throws -> Int {
            var args = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "Authorization: Bearer \(token)", "--data-binary", body]
            if let kind { args += ["-H", "Kbuild-Kind: \(kind)"] }
            return Int(try sh("/usr/bin/curl", args + [server.url + "/v1/objects/\(kid)"]).stdout) ?? -1
        }
        let hello = KID(hashing: Array("hello worker\n".utf8)).description
        XCTAssertEqual(try put(hello, kind: "file", "not these bytes\n"), 400)
        XCTAssertEqual(try put(hello, kind: "elephant", "hello worker\n"), 400)
        XCTAssertEqual(try put(hello, kind: "file", "hello worker\n"), 201)
        XCTAssertEqual(try sh("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer \(token)", server.url + "/v1/objects/\(hello)"]).stdout, "hello worker\n")
        let missing = try sh("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer \(token)", "--data-binary", #"["\#(hello)","\#(zero)"]"#,
                                              server.url + "/v1/objects/missing"])
        XCTAssertEqual(trimmed(missing.stdout), #"["\#(zero)"]"#)
        let tree = try Tree(entries: [.file("a", kid: try KID(parsing: zero), size: 1)])
        let treeFile = try tempDir(self, "worker-tree") + "/tree"
        XCTAssertTrue(FileManager.default.createFile(atPath: treeFile, contents: Data(tree.encoded())))
        let treeKID = KID(hashing: tree.encoded()).description
        let sentTree = try sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "Authorization: Bearer \(token)",
                                               "-H", "Kbuild-Kind: tree", "--data-binary", "@" + treeFile, server.url + "/v1/objects/\(treeKID)"])
        XCTAssertEqual(sentTree.stdout, "409", "a tree naming an object that is not there")
        // The admin lists the worker's token; revoked, it gets 401.
        XCTAssertTrue(try kbuild(["tokens"], dataDir: data).stdout.contains("worker-w1  joins as build worker w1"))
        XCTAssertEqual(try kbuild(["tokens:revoke", "worker-w1"], dataDir: data).status, 0)
        usleep(1_100_000)
        XCTAssertEqual(try status("GET", "/api/v1/state/revision", nil, token), 401)
    }
}
