import KbuildState
import Foundation
import KbuildCore
import NIOPosix
import Synchronization

/// Keeps every app's git repository on this control plane too, when several
/// share one state (etcd): it makes the bare repository of an app another
/// control plane created, and fetches each push another took, so a push may
/// go to any control plane and losing one loses no repository.
///
/// A push reaches the state (`apps/APP/source`) while its receiving control
/// plane's git still holds it in quarantine (the pre-receive hook is
/// running), so a fetch is retried until the pushed commit is there: the
/// branch is set to it only when a peer's branch points at that commit.
public struct GitMirror: Sendable {
    /// Another control plane's git over HTTPS: its base URL, the admin token, its CA (a PEM file).
    public struct Peer: Sendable {
        public var url: String
        public var token: String
        public var caFile: String
        public init(url: String, token: String, caFile: String) {
            self.url = url
            self.token = token
            self.caFile = caFile
        }
    }

    let apps: AppStore
    let kbuild: String
    let peers: @Sendable () async throws -> [Peer]
    let say: @Sendable (String) -> Void

    public init(apps: AppStore, kbuild: String, peers: @escaping @Sendable () async throws -> [Peer], say: @escaping @Sendable (String) -> Void) {
        self.apps = apps
        self.kbuild = kbuild
        self.peers = peers
        self.say = say
    }

    var refs: any RefStore { apps.refs }

    /// Brings every app up to date, then follows changes under apps/ until cancelled: one task
    /// follows the changes, one fetches what is pending each second (a commit no peer has yet stays).
    public func run() async throws {
        let start = try await refs.currentRevision()
        let pending = Pending()
        for app in try await apps.list() {
            try? await ensureRepository(app.name)
            if let source = try await source(of: app.name) { pending.set(app.name, source) }
        }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                for try await change in refs.watch(prefix: Schema.apps, after: start) {
                    switch Schema.Key(change.name) {
                    case .app(let app) where change.new != nil:
                        do { try await ensureRepository(app) } catch { say("git mirror: \(app): \(error)") }
                    case .appField(let app, .source):
                        if let source = try await source(of: app) { pending.set(app, source) }
                    default:
                        break
                    }
                }
            }
            group.addTask {
                while true {
                    for (app, source) in pending.all() where await fetch(app, source) { pending.done(app, source) }
                    try await Task.sleep(for: .milliseconds(500))
                }
            }
        }
    }

    /// The pushes not fetched yet, by app.
    final class Pending: Sendable {
        private let byApp = Mutex<[String: SourceRecord]>([:])
        func set(_ app: String, _ source: SourceRecord) { byApp.withLock { $0[app] = source } }
        func all() -> [(String, SourceRecord)] { byApp.withLock { $0.map { ($0.key, $0.value) } } }
        /// Done with `source` (a newer push of the app stays pending).
        func done(_ app: String, _ source: SourceRecord) { byApp.withLock { if $0[app]?.commit == source.commit { $0[app] = nil } } }
    }

    func ensureRepository(_ name: String) async throws {
        let record = try await apps.get(name)
        try await NIOThreadPool.singleton.runIfActive { [apps, kbuild] in try apps.makeRepository(record, kbuild: kbuild) }
    }

    func source(of app: String) async throws -> SourceRecord? {
        guard let ref = try await refs.get(try Schema.source(app)) else { return nil }
        return try? await Records.get(SourceRecord.self, ref.kid, from: apps.keg, what: "source")
    }

    /// Sets the pushed branch to the pushed commit, fetched from a peer that has it; whether it is done.
    func fetch(_ app: String, _ source: SourceRecord) async -> Bool {
        let repo = apps.repository(app)
        let branch = source.ref.hasPrefix("refs/heads/") ? source.ref : "refs/heads/" + source.ref
        if await git({ try Git.run(["--git-dir", repo, "merge-base", "--is-ancestor", source.commit, branch]) }) { return true }
        for peer in (try? await peers()) ?? [] {
            let basic = Data("kbuild:\(peer.token)".utf8).base64EncodedString()
            // The token goes in the environment, not the command line.
            let env = ["GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": "Authorization: Basic \(basic)",
                       "GIT_SSL_CAINFO": peer.caFile, "GIT_TERMINAL_PROMPT": "0"]
            let fetched = await git {
                try Git.run(["--git-dir", repo, "fetch", "--quiet", "--no-tags", "\(peer.url)/\(app).git", "+\(branch):refs/kbuild/mirror"], environment: env)
                try Git.run(["--git-dir", repo, "merge-base", "--is-ancestor", source.commit, "refs/kbuild/mirror"])
                // Only forward, and only from what the branch is now (a push taken here meanwhile wins).
                let now = Git.output(["--git-dir", repo, "rev-parse", "--verify", "--quiet", branch])
                if let now { try Git.run(["--git-dir", repo, "merge-base", "--is-ancestor", now, source.commit]) }
                try Git.run(["--git-dir", repo, "update-ref", branch, source.commit, now ?? String(repeating: "0", count: 40)])
            }
            if fetched { return true }
        }
        return false
    }

    /// Whether the git commands succeeded, run off the cooperative threads.
    func git(_ body: @escaping @Sendable () throws -> Void) async -> Bool {
        do {
            try await NIOThreadPool.singleton.runIfActive(body)
            return true
        } catch {
            return false
        }
    }
}
