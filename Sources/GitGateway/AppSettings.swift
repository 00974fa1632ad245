import Builds
import KbuildCore
public import KbuildState
import Stacks

/// The app verbs that change how its next build runs: `apps:set` and
/// `builds:cache:purge`, as every client asks them (the CLI on the control
/// plane and the API alike).
extension AppStore {
    /// Sets the build network and/or stack, each checked before anything changes; each takes effect at the next build.
    public func changeSettings(_ app: String, _ settings: API.AppSettings, actor: String) async throws -> AppRecord {
        guard settings.buildNetwork != nil || settings.stack != nil else {
            throw KbuildError(.invalidArgument, "give at least one setting (\(AppRecord.settings.joined(separator: ", ")))")
        }
        let network = try settings.buildNetwork.map { try BuildNetwork(parsing: $0) }
        var stack: String?
        if let name = settings.stack { stack = try await StackStore(keg: keg, refs: refs).resolve(name).name }
        let newStack = stack
        return try await update(app, actor: actor) { record in
            if let network { record.buildNetwork = network }
            if let newStack { record.stack = newStack }
        }
    }

    /// Drops the app's build cache, its own dependency layers and its git
    /// buildpacks' clones (a new cache epoch), so its next push builds anew.
    public func purgeBuildCache(_ app: String, actor: String) async throws -> API.CachePurged {
        let record = try await update(app, actor: actor) { $0.cacheEpoch += 1 }
        if let cache = try await refs.get(try Schema.buildCache(app)) {
            _ = try await refs.compareAndSwap(cache.name, to: nil, expecting: .value(cache.kid), actor: actor)
        }
        let layers = try await DependencyLayers.purge(app: app, refs: refs, actor: actor)
        let clones = try await GitBuildpacks.purge(app: app, refs: refs, actor: actor)
        return API.CachePurged(cacheEpoch: record.cacheEpoch, dependencyLayers: layers, gitBuildpacks: clones)
    }
}
