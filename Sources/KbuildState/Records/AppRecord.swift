import KbuildCore
public import Foundation

/// An app: its name, stack, deploy branch, build limits and build network. Ref `apps/NAME`.
public struct AppRecord: Codable, Sendable, Equatable {
    public var kind = "kbuild.app/v1"
    public var name: String
    /// The concrete stack (`debian-13`, never the alias `debian`): an app changes stack only when told to.
    public var stack: String
    public var deployBranch: String
    public var build: BuildLimits
    /// What its builds reach: `egress` for apps made since builds had a network; an older record has none.
    public var buildNetwork: BuildNetwork
    /// Largest file a push may carry.
    public var maxFileSize: UInt64
    /// Turned by `builds:cache:purge`: an input of every build, so nothing built before is reused.
    public var cacheEpoch: Int
    public var createdBy: String
    public var createdAt: Date

    public init(name: String, stack: String, deployBranch: String = "main", build: BuildLimits = BuildLimits(),
                buildNetwork: BuildNetwork = .egress, maxFileSize: UInt64 = 100 << 20, createdBy: String, createdAt: Date = Date()) {
        self.name = name
        self.stack = stack
        self.deployBranch = deployBranch
        self.build = build
        self.buildNetwork = buildNetwork
        self.maxFileSize = maxFileSize
        self.cacheEpoch = 0
        self.createdBy = createdBy
        self.createdAt = createdAt
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(String.self, forKey: .kind)
        name = try c.decode(String.self, forKey: .name)
        stack = try c.decode(String.self, forKey: .stack)
        deployBranch = try c.decode(String.self, forKey: .deployBranch)
        build = try c.decode(BuildLimits.self, forKey: .build)
        buildNetwork = try c.decodeIfPresent(BuildNetwork.self, forKey: .buildNetwork) ?? .none
        maxFileSize = try c.decode(UInt64.self, forKey: .maxFileSize)
        cacheEpoch = try c.decodeIfPresent(Int.self, forKey: .cacheEpoch) ?? 0
        createdBy = try c.decode(String.self, forKey: .createdBy)
        createdAt = try c.decode(Date.self, forKey: .createdAt)
    }

    /// The settings `apps:set` changes, by the names it takes.
    public static let settings = ["build-network", "stack"]
}

/// Who was shown an app's config values, and which keys (the dashboard's
/// "show values"): each showing is a change of `apps/APP/config-access`, so
/// its history is the access log, with the actor beside each.
public struct ConfigAccessRecord: Codable, Sendable, Equatable {
    public var kind = "kbuild.config-access/v1"
    public var app: String
    public var by: String
    public var at: Date
    public var keys: [String]

    public init(app: String, by: String, at: Date = Date(), keys: [String]) {
        self.app = app
        self.by = by
        self.at = at
        self.keys = keys
    }
}
