import ArgumentParser
import Foundation
import KbuildCore
import OCI
import Stacks
import KbuildState

struct StackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stack",
        abstract: "Stacks: the base root filesystems builds and apps run on, stored as OCI images.",
        subcommands: [StackCreate.self, StackImport.self, StackLs.self, StackRm.self, StackExport.self]
    )
}

extension GlobalOptions {
    func openStacks() throws -> StackStore {
        try dir.create()
        return StackStore(keg: try openKeg(), refs: try openRefs())
    }
}

struct StackCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Make a built-in stack from this host's Debian packages.",
        discussion: """
            busybox: Debian's busybox-static and its applets (about 2 MB), for fast tests.

            debian-13, debian-12: Debian trixie or bookworm from this host's apt mirror, as two images: the run image \
            (minbase + python3, nodejs, ca-certificates, libpq5, tzdata) that apps run on, and NAME-build (the run image \
            + build-essential, python3-dev, python3-venv, pip, npm, golang, git, pkg-config, libpq-dev) that builds run on. \
            debian: the newest (debian-13). The .debs are kept in /var/cache/kbuild/debs for the next create.

            debian-12-addons, debian-13-addons: what add-ons run on (kbuild addons:create): that Debian stack's run image \
            (made first) + postgresql and redis-server (PostgreSQL 15 and Redis 7; PostgreSQL 17 and Redis 8).
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("busybox, debian-13, debian-12, debian (the newest), debian-12-addons or debian-13-addons.", valueName: "kind")) var kind: String
    @Option(help: "The name to give it (default: the kind).") var name: String?

    func run() async throws {
        guard let builtin = StackStore.Builtin(parsing: kind) else {
            throw KbuildError(.invalidArgument, "unknown stack kind \(kind.debugDescription): use busybox, debian-13, debian-12, debian, debian-12-addons or debian-13-addons (or `kbuild stack import DIR NAME`)")
        }
        let stack = try await global.openStacks().create(builtin, name: name, actor: currentActor) { say("-----> \($0)") }
        say("\(stack.name) \(stack.image) (\(formatBytes(UInt64(stack.size))))")
    }
}

struct StackImport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Store any root filesystem directory as a stack.",
        discussion: "Device nodes, fifos and sockets are left out (sandboxes bring their own /dev); owners become root."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The root filesystem.", valueName: "dir")) var directory: String
    @Argument(help: "The stack's name.") var name: String

    func run() async throws {
        let stack = try await global.openStacks().importDirectory(directory, name: name, actor: currentActor)
        say("\(stack.name) \(stack.image) (\(formatBytes(UInt64(stack.size))))")
    }
}

struct StackLs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List stacks with their image KIDs.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "JSON output.") var json = false

    struct Row: Encodable {
        var name: String
        var image: KID
        var size: Int64
        var layers: [KID]
    }

    func run() async throws {
        let stacks = try await global.openStacks().list()
        if json { return try printJSON(stacks.map { Row(name: $0.name, image: $0.image, size: $0.size, layers: $0.layers) }) }
        for stack in stacks { print("\(stack.name)\t\(stack.image)\t\(formatBytes(UInt64(stack.size)))") }
    }
}

struct StackRm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a stack's name (`keg gc` frees its objects once nothing uses them).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The stack's name.") var name: String

    func run() async throws {
        try await global.openStacks().remove(name, actor: currentActor)
    }
}

struct StackExport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "export", abstract: "Write a stack as an OCI image layout (for skopeo, umoci, runc).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The stack's name.") var name: String
    @Argument(help: ArgumentHelp("A directory to create.", valueName: "dir")) var directory: String

    func run() async throws {
        let stacks = try global.openStacks()
        let stack = try await stacks.get(name)
        try stacks.images.exportLayout(stack.image, to: directory, tag: stack.name)
        say("\(directory): \(stack.image.ociDigest) tagged \(stack.name)")
    }
}
