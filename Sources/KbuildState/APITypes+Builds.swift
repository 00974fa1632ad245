public import KbuildCore
public import Foundation

/// The API's types for the builds list and the dashboard: a build queued,
/// running or finished, a page of them, paged lists' count header, and a
/// one-time dashboard login.
extension API {
    /// How many a paged list has in all (`GET /apps?page=N`).
    public static let totalHeader = "Kbuild-Total"

    /// A one-time dashboard login (`kbuild dashboard`): the path to open on the server, good until `expires`.
    public struct LoginCode: Codable, Sendable, Equatable {
        public var path: String
        public var expires: Date
        public init(path: String, expires: Date) {
            self.path = path
            self.expires = expires
        }
    }

    /// A build, queued, running or finished (`GET /api/v1/builds`).
    public struct BuildInfo: Codable, Sendable, Equatable {
        public enum State: String, Codable, Sendable { case queued, running, succeeded, failed }
        public var build: KID
        public var app: String
        public var state: State
        /// Who asked (the pusher), and when it was queued.
        public var requestedBy: String?
        public var requestedAt: Date?
        /// The worker that holds or ran it.
        public var worker: String?
        public var startedAt: Date?
        public var finishedAt: Date?
        public var error: String?
        /// Its inputs: the source tree, the stack and the buildpacks.
        public var source: KID
        public var stack: String
        public var buildpacks: [String]
        /// The stored log (finished builds).
        public var log: KID?
        /// The revision of its latest change (queued, claimed or finished).
        public var revision: Revision

        public init(build: KID, app: String, state: State, inputs: BuildInputs, revision: Revision) {
            self.build = build
            self.app = app
            self.state = state
            self.source = inputs.source
            self.stack = inputs.stackName
            self.buildpacks = inputs.buildpacks.map(\.name)
            self.revision = revision
        }
    }

    /// One page of builds, newest first.
    public struct BuildPage: Codable, Sendable, Equatable {
        public var builds: [BuildInfo]
        /// How many there are in all (queued, running and finished) for the asker.
        public var total: Int
        public var page: Int
        public var perPage: Int

        public init(builds: [BuildInfo], total: Int, page: Int, perPage: Int) {
            self.builds = builds
            self.total = total
            self.page = page
            self.perPage = perPage
        }
    }
}
