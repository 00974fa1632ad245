public import Cluster
public import KbuildCore
public import Keg
import KegRemote
public import KbuildState
import Releases
import Builds
import OCI
import Sandbox
import Stacks

/// What any process of a release starts with: the image's layers as lower
/// dirs, the image's Env, the app's config vars, and the trace environment
/// (KBUILD_APP, KBUILD_RELEASE, KBUILD_PROCESS, KBUILD_SOURCE, KBUILD_COMMIT).
/// The node agent and one-off runs (`kbuild run`) both start from here, so no
/// process starts without its chain.
public struct ProcessLaunch: Sendable {
    public var lowerDirs: [String]
    public var environment: [String: String]
    public var workingDirectory: String
    public var release: Release

    /// Records come through `reader`; the image's objects from `images`, and
    /// what is missing there is pulled from `remote` first (a node that is a host of its own).
    public static func prepare(release releaseKID: KID, image: KID, config: KID, app: String, name: String, id: String, port: Int?,
                               reader: ClusterReader, images keg: Keg, remote: (any KegUpstream)?) async throws -> ProcessLaunch {
        if let remote, !keg.contains(image) { try await remote.fetch(image, into: keg) }
        let images = ImageStore(keg: keg)
        let manifest = try images.manifest(image)
        if let remote {
            for kid in [try manifest.config.kid()] + (try images.layerTrees(manifest)) where !keg.contains(kid) {
                try await remote.fetch(kid, into: keg)
            }
        }
        let imageConfig = try images.config(of: manifest)
        let stacks = StackStore(keg: keg, refs: reader.refs)
        let lowers = try images.layerTrees(manifest).reversed().map { try stacks.checkout($0) }
        let release = try await reader.record(Release.self, releaseKID, what: "release")
        let vars = try await reader.record(ConfigVars.self, config, what: "config").vars
        var source: String?
        if let s = release.sourceRecord { source = try await reader.record(SourceRecord.self, s, what: "source").source.description }

        var env = SandboxSpec.defaultEnvironment
        env.merge(imageConfig.config?.environment ?? [:]) { _, new in new }
        env.merge(vars) { _, new in new }
        if let port { env["PORT"] = String(port) } else { env["PORT"] = nil }
        env["DYNO"] = name
        env["KBUILD_APP"] = app
        env["KBUILD_RELEASE"] = "v\(release.version)"
        env["KBUILD_PROCESS"] = id
        env["KBUILD_SOURCE"] = source ?? ""
        env["KBUILD_COMMIT"] = release.commit ?? ""
        return ProcessLaunch(lowerDirs: lowers, environment: env, workingDirectory: imageConfig.config?.WorkingDir ?? "/app", release: release)
    }
}
