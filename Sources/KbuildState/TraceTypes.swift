public import KbuildCore
public import Foundation

// What `kbuild trace` answers, as the API carries it.

/// One process, as trace shows it.
public struct ProcessLink: Codable, Sendable, Equatable {
    public var kid: KID
    public var record: ProcessRecord
    /// Its state now, from its node's report; nil when it no longer runs.
    public var state: String?

    public init(kid: KID, record: ProcessRecord, state: String? = nil) {
        self.kid = kid
        self.record = record
        self.state = state
    }
}

public struct ReleaseLink: Codable, Sendable, Equatable {
    public var app: String
    public var version: Int64
    public var kid: KID
    public var description: String
    public var createdBy: String
    public var createdAt: Date
    public var image: KID
    public var config: KID

    public init(app: String, version: Int64, kid: KID, description: String, createdBy: String, createdAt: Date, image: KID, config: KID) {
        self.app = app
        self.version = version
        self.kid = kid
        self.description = description
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.image = image
        self.config = config
    }
}

public struct BuildLink: Codable, Sendable, Equatable {
    public var build: KID
    public var stack: String
    public var buildpacks: [String]
    public var log: KID?
    public var finishedAt: Date

    public init(build: KID, stack: String, buildpacks: [String], log: KID? = nil, finishedAt: Date) {
        self.build = build
        self.stack = stack
        self.buildpacks = buildpacks
        self.log = log
        self.finishedAt = finishedAt
    }
}

public struct SourceLink: Codable, Sendable, Equatable {
    public var record: KID
    public var source: KID
    public var commit: String
    public var author: String
    public var email: String
    public var message: String
    public var pushedBy: String
    public var pushedAt: Date
    public var repository: String
    public var ref: String

    public init(record: KID, source: KID, commit: String, author: String, email: String, message: String, pushedBy: String, pushedAt: Date, repository: String, ref: String) {
        self.record = record
        self.source = source
        self.commit = commit
        self.author = author
        self.email = email
        self.message = message
        self.pushedBy = pushedBy
        self.pushedAt = pushedAt
        self.repository = repository
        self.ref = ref
    }
}

/// The chain from one thing up to its commit.
public struct Chain: Codable, Sendable, Equatable {
    public var process: ProcessLink?
    public var release: ReleaseLink?
    public var build: BuildLink?
    public var source: SourceLink?

    public init(process: ProcessLink? = nil, release: ReleaseLink? = nil, build: BuildLink? = nil, source: SourceLink? = nil) {
        self.process = process
        self.release = release
        self.build = build
        self.source = source
    }
}

/// What `kbuild trace` answers: the chain up from what was asked, and down
/// from it: the releases that used it and the processes running it now.
public struct TraceResult: Codable, Sendable, Equatable {
    public var subject: String
    public var up: Chain
    public var releases: [ReleaseLink]
    public var processes: [ProcessLink]

    public init(subject: String, up: Chain, releases: [ReleaseLink], processes: [ProcessLink]) {
        self.subject = subject
        self.up = up
        self.releases = releases
        self.processes = processes
    }
}

/// What changed between two releases of an app (`kbuild trace APP@v6..v7`).
/// Config values are never shown, only which keys changed.
public struct ReleaseDiff: Codable, Sendable, Equatable {
    public struct FileChange: Codable, Sendable, Equatable {
        /// "added", "removed" or "changed".
        public var change: String
        public var path: String

        public init(change: String, path: String) {
            self.change = change
            self.path = path
        }
    }
    public var app: String
    public var from: ReleaseLink
    public var to: ReleaseLink
    public var commits: [String]
    public var files: [FileChange]
    /// `diff -u` of the changed text files (each up to 256 KiB).
    public var patch: String
    public var stack: [String]
    public var buildpacks: [[String]]
    public var configAdded: [String]
    public var configRemoved: [String]
    public var configChanged: [String]

    public init(app: String, from: ReleaseLink, to: ReleaseLink, commits: [String], files: [FileChange], patch: String, stack: [String], buildpacks: [[String]], configAdded: [String], configRemoved: [String], configChanged: [String]) {
        self.app = app
        self.from = from
        self.to = to
        self.commits = commits
        self.files = files
        self.patch = patch
        self.stack = stack
        self.buildpacks = buildpacks
        self.configAdded = configAdded
        self.configRemoved = configRemoved
        self.configChanged = configChanged
    }
}
