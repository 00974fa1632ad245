import ArgumentParser
import Foundation
import KbuildClient
import KbuildCore
import KbuildState

/// `kbuild volumes APP`.
struct VolumesList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volumes", abstract: "List an app's volumes: size, use, node, where they are mounted.",
        discussion: "A volume is a directory of a fixed size on one node that outlives deploys, restarts and rollbacks. It is never rolled back with a release.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let list = try await global.client().volumes(app)
        if json { return try printJSON(list) }
        guard !list.isEmpty else { return say("\(app) has no volumes (kbuild volumes:create \(app) NAME --size 1G)") }
        say("=== \(app) volumes")
        for v in list { say(VolumesInfo.line(v)) }
    }
}

/// `kbuild volumes:info APP NAME`.
struct VolumesInfo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "volumes:info", abstract: "Show one volume.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The volume.") var name: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let v = try await global.client().volume(app, name)
        if json { return try printJSON(v) }
        say("=== \(app) volume \(v.record.name)")
        say("State:    \(v.state)\(v.error.map { ": \($0)" } ?? "")")
        say("Size:     \(v.used.map { "\(formatBytes($0)) used of " } ?? "")\(formatMemory(v.record.size))")
        say("Node:     \(v.record.node) (its processes run there only)")
        say("Id:       \(v.record.id)")
        say("Created:  \(shortDate(v.record.createdAt)) by \(v.record.createdBy)")
        say("Mounted:  " + (v.mounts.isEmpty ? "no" : v.mounts.map(VolumesInfo.mountText).joined(separator: "; ")))
    }

    static func mountText(_ m: VolumeMount) -> String { "\(m.path) (\(m.types?.joined(separator: ", ") ?? "every process type"))" }

    static func line(_ v: API.VolumeInfo) -> String {
        let use = v.used.map { "\(formatBytes($0)) of " } ?? ""
        let mounted = v.mounts.first.map { " at \(mountText($0))" } ?? " (not mounted)"
        return "\(v.record.name)  \(use)\(formatMemory(v.record.size))  \(v.state)  node \(v.record.node)\(mounted)"
    }
}

/// `kbuild volumes:create APP NAME --size 1G [--node N]`.
struct VolumesCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volumes:create", abstract: "Make a volume of a fixed size on a node (writes past its size fail with ENOSPC).",
        discussion: "It goes on the live node with the most room, or on --node. Mount it with volumes:mount; the processes that mount it then run on that node only.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The volume's name (a-z, 0-9, '-').") var name: String
    @Option(help: "Its size, e.g. 1G or 512M.") var size: String
    @Option(help: "The node to make it on.") var node: String?

    func run() async throws {
        let bytes = try parseBytes(size, what: "--size")
        let v = try await global.client().createVolume(app, API.VolumeCreate(name: name, size: bytes, node: node))
        say("Created volume \(name) of \(app): \(formatMemory(v.record.size)) on node \(v.record.node) (\(v.state))")
        say("Mount it with: kbuild volumes:mount \(app) \(name) /data")
    }
}

/// `kbuild volumes:mount APP NAME PATH [--type web]`.
struct VolumesMount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volumes:mount", abstract: "Mount a volume into an app's processes (a new release; they restart with it).",
        discussion: "Processes that mount a volume run on its node only, and are replaced stop-then-start (never two on one volume at once). One-off runs and the release phase do not get volumes.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The volume.") var name: String
    @Argument(help: "Where it appears in the processes, e.g. /data.") var path: String
    @Option(name: .customLong("type"), help: "Only into this process type (repeatable; default: every type).") var types: [String] = []

    func run() async throws {
        let r = try await global.client().mountVolume(app, name, API.VolumeMountRequest(path: path, types: types.isEmpty ? nil : types))
        say("Mounted \(name) at \(path) in \(app): v\(r.version)")
    }
}

/// `kbuild volumes:unmount APP NAME`.
struct VolumesUnmount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "volumes:unmount", abstract: "Take a volume out of an app's processes (a new release); its data stays.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The volume.") var name: String

    func run() async throws {
        let r = try await global.client().unmountVolume(app, name)
        say("Unmounted \(name) from \(app): v\(r.version)")
    }
}

/// `kbuild volumes:destroy APP NAME`.
struct VolumesDestroy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volumes:destroy", abstract: "Delete a volume and its data for good (refused while it is mounted).",
        discussion: "Asks you to type the volume's name; --confirm NAME answers in advance (for scripts).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "The volume.") var name: String
    @Option(help: "The volume's name again, to confirm without a prompt.") var confirm: String?

    func run() async throws {
        try confirmDestroy(name, given: confirm, warning: "This deletes volume \(name) of \(app) and all its data.")
        let done = try await global.client().destroyVolume(app, name)
        if done["destroyed"] != nil {
            say("Destroyed volume \(name) of \(app)")
        } else {
            say("Destroying volume \(name) of \(app): node \(done["node"] ?? "?") deletes it when it reports again")
        }
    }
}
