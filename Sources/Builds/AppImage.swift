public import KbuildCore
public import Keg
import OCI
import Foundation
public import KbuildState

/// The OCI image of a build: the stack's layers plus the app layer, and a
/// config that says how to run it. Assembling is cheap (two small blobs), so
/// a memoised build of a new commit gets an image whose labels name that
/// commit, on the very same layers.
public enum AppImage {
    /// The port a process listens on when nothing sets `PORT` (the node agent does).
    public static let defaultPort = 5000

    public static func assemble(_ record: BuildRecord, source: SourceRecord, keg: Keg) throws -> KID {
        guard record.status == .succeeded, let layer = record.layer else {
            throw KbuildError(.invalidArgument, "build \(record.build.short) did not succeed: no image to make")
        }
        let images = ImageStore(keg: keg)
        let stack = try images.manifest(record.inputs.stack)
        let stackConfig = try images.config(of: stack).config

        var env = stackConfig?.environment ?? [:]
        env.merge(record.configVars) { _, new in new }
        env["PORT"] = env["PORT"] ?? String(defaultPort)

        var labels = [
            "org.opencontainers.image.revision": source.commit,
            "org.opencontainers.image.source": source.repository,
            "org.opencontainers.image.title": source.app,
            "dev.kbuild.app": source.app,
            "dev.kbuild.source": record.inputs.source.description,
            "dev.kbuild.build": record.build.description,
            "dev.kbuild.stack": "\(record.inputs.stackName)@\(record.inputs.stack)",
            "dev.kbuild.buildpacks": record.used.map { "\($0.name)@\($0.tree)" }.joined(separator: ","),
        ]
        if !record.processTypes.isEmpty {
            labels["dev.kbuild.process-types"] = String(decoding: try canonicalJSON(record.processTypes), as: UTF8.self)
        }
        var config = ImageConfig.Config(Env: env.keys.sorted().map { "\($0)=\(env[$0]!)" },
                                        Cmd: record.processTypes["web"].map { AppCommand.shell($0) },
                                        WorkingDir: "/app", Labels: labels)
        if record.processTypes["web"] != nil { config.ExposedPorts = ["\(env["PORT"]!)/tcp": EmptyObject()] }
        return try images.putImage(layers: stack.layers + (record.dependencyLayers ?? []) + [layer], config: config,
                                   createdBy: "kbuild build \(record.build) (\(record.used.map(\.name).joined(separator: ", ")))")
    }
}
