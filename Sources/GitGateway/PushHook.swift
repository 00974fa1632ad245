import KbuildCore
public import Keg
import KbuildState
public import KbuildClient
import GitSource
import Foundation

/// The pre-receive hook of an app's repository, on the control plane's
/// machine. For a push to the deploy branch it reads the pushed tree into the
/// Keg (the source KID: git keeps a push's objects in a quarantine that only
/// the hook sees) and hands the push to the control plane's `DeployPipeline`
/// through the API, showing the pusher what it streams back. A push the
/// control plane rejects exits non-zero, so the branch does not move.
/// Pushes over HTTP and SSH take this one path.
public struct PushHook: Sendable {
    public struct Update: Sendable, Equatable {
        public var old: String
        public var new: String
        public var ref: String
    }

    public let keg: Keg
    public let client: KbuildClient
    public let app: String
    public let pusher: String
    public let repositoryURL: String
    /// Text for the pusher (git shows it as `remote:` lines).
    public let say: @Sendable (String) -> Void
    /// Whether the pusher is gone (it hung up, or the HTTP server that runs git died): asked each second while
    /// the control plane deploys; the hook then hangs up on it, and it deploys nothing more of this push.
    public let pusherGone: @Sendable () -> Bool

    public init(keg: Keg, client: KbuildClient, app: String, pusher: String, repositoryURL: String,
                pusherGone: @escaping @Sendable () -> Bool = { false }, say: @escaping @Sendable (String) -> Void) {
        self.keg = keg
        self.client = client
        self.app = app
        self.pusher = pusher
        self.repositoryURL = repositoryURL
        self.pusherGone = pusherGone
        self.say = say
    }

    /// `old new ref` lines, as git gives them on stdin.
    public static func parseUpdates(_ text: String) throws -> [Update] {
        try text.split(separator: "\n").map { line in
            let parts = line.split(separator: " ")
            guard parts.count == 3 else { throw KbuildError(.invalidArgument, "failed to read the pushed refs: malformed line \(String(line).debugQuoted)") }
            return Update(old: String(parts[0]), new: String(parts[1]), ref: String(parts[2]))
        }
    }

    static func isZero(_ sha: String) -> Bool { sha.allSatisfy { $0 == "0" } }

    /// Bytes as people read them: exact under 1 KiB or in whole KiB or MiB, else in KiB or MiB with one decimal.
    static func size(_ bytes: UInt64) -> String {
        if bytes < 1024 { return "\(bytes) bytes" }
        if bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        if bytes % 1024 == 0 && bytes < 1 << 20 { return "\(bytes >> 10) KiB" }
        if bytes < 1 << 20 { return String(format: "%.1f KiB", Double(bytes) / 1024) }
        return String(format: "%.1f MiB", Double(bytes) / 1_048_576)
    }

    /// Deploys the deploy branch, if it was pushed; throws to reject the push.
    public func run(_ updates: [Update]) async throws {
        let terms = try await client.pushTerms(app)
        let deployRef = "refs/heads/\(terms.deployBranch)"
        for update in updates {
            if update.ref == deployRef {
                guard !PushHook.isZero(update.new) else {
                    throw KbuildError(.invalidArgument, "refusing to delete \(terms.deployBranch), the deploy branch of \(app)")
                }
                try await deploy(update, terms: terms)
            } else if update.ref.hasPrefix("refs/heads/") && !PushHook.isZero(update.new) {
                let branch = update.ref.dropFirst("refs/heads/".count)
                say("-----> Pushed to \(branch), not \(terms.deployBranch): stored, not built. Push to \(terms.deployBranch) to deploy (git push kbuild \(branch):\(terms.deployBranch))\n")
            }
        }
    }

    /// Reads the pushed tree into the Keg, within what the app may hold, and has the control plane deploy it.
    func deploy(_ update: Update, terms: API.PushTerms) async throws {
        say("-----> Receiving \(update.new.prefix(7)) for \(app)\n")
        var limits = SourceLimits(maxFileSize: terms.maxFileSize)
        if let left = terms.kegBytesLeft, left < limits.maxTotalSize {
            limits.maxTotalSize = left
            limits.overTotal = """
                \(app) would hold more than its limit of sources and images in the Keg with this push: it holds \(Self.size(terms.kegBytesHeld ?? 0)) \
                and it may hold \(Self.size(terms.kegBytes ?? 0)) (kbuild apps:limits \(app)), so this tree may have \(Self.size(left)) at most; \
                the push is refused
                """
        }
        let source = try GitSource.importTree(repository: nil, revision: update.new, into: keg, limits: limits)
        let record = SourceRecord(app: app, source: source.tree, commit: source.commit, author: source.author, authorEmail: source.authorEmail,
                                  message: source.message, committedAt: source.committedAt, pushedBy: pusher, pushedAt: Date(),
                                  ref: update.ref, repository: repositoryURL, files: source.files, bytes: source.bytes)
        // The control plane deploys it, telling the pusher as it goes; a pusher gone hangs up on it.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.push(app, API.Push(source: record), say: say) }
            group.addTask {
                while !pusherGone() { try await Task.sleep(for: .seconds(1)) }
                throw KbuildError(.io, "the pusher hung up; nothing more of this push is deployed")
            }
            try await group.next()
            group.cancelAll()
        }
    }
}
