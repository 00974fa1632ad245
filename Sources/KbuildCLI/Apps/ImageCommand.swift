import ArgumentParser
import Builds
import Foundation
import KbuildClient
import KbuildCore
import OCI
import KbuildState
import Keg
import KegRemote

struct ImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "The OCI images pushes were built into.",
        subcommands: [ImageLs.self, ImageExport.self]
    )
}

struct ImageLs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "An app's images, newest first, with the commit each was built from.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let rows: [API.ImageInfo]
        if let client = try global.remoteClient() {
            rows = try await client.images(app)
        } else {
            let apps = try global.openApps()
            _ = try await apps.get(app)
            rows = try await ImageStore(keg: apps.keg).history(app: app, refs: apps.refs)
        }
        if json { return try printJSON(rows) }
        let time = ISO8601DateFormatter()
        for row in rows {
            say("\(row.image.prefix(10))  \(time.string(from: row.createdAt))  commit \(row.commit?.prefix(7) ?? "?")  build \(row.build?.prefix(10) ?? "?")  \(formatBytes(UInt64(row.size)))")
        }
    }
}

struct ImageExport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write an image as an OCI image layout directory (for skopeo, umoci, podman).",
        discussion: "Example: kbuild image export K-1234abcd ./img && umoci unpack --image ./img:latest bundle"
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The image's KID or a unique prefix.") var image: String
    @Argument(help: "The directory to create.") var directory: String
    @Option(help: "The tag to name it by in index.json.") var tag = "latest"

    func run() throws {
        let keg = try global.openKeg()
        let kid = try keg.resolve(try KIDPrefix(parsing: image))
        try ImageStore(keg: keg).exportLayout(kid, to: directory, tag: tag)
        say("\(kid) → \(directory) (tag \(tag))")
    }
}

struct BuildpackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "buildpack",
        abstract: "Buildpacks (Heroku's classic API: bin/detect, bin/compile, bin/release).",
        subcommands: [BuildpackAdd.self, BuildpackLs.self]
    )
}

struct BuildpackAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Store a buildpack directory or git repository under a name (again, to update it).",
        discussion: """
            A git URL (https://, http://, git://, ssh://, file://, with #BRANCH-OR-TAG) is cloned once and stored as a tree:
            kbuild buildpack add https://github.com/heroku/heroku-buildpack-python#v250 --name heroku-python
            Detection tries python, nodejs, go, static, then added buildpacks by name, then procfile; an app picks its own in .buildpacks.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The buildpack's directory, or a git URL.") var directory: String
    @Option(help: "Its name (default: the directory's or repository's name).") var name: String?

    func run() async throws {
        if let client = try global.remoteClient() {
            let pack: Buildpack
            if BuildpackStore.isGitURL(directory) {
                pack = try await client.addBuildpack(API.AddBuildpack(name: name, gitURL: directory))  // cloned by the control plane
            } else {
                // Stored in a Keg of its own here, sent object by object (each checked against its KID there), then named.
                var template = Array((NSTemporaryDirectory() + "/kbuild-buildpack-XXXXXX").utf8CString)
                guard let made = mkdtemp(&template) else { throw KbuildError.syscall("mkdtemp", NSTemporaryDirectory(), verb: "stage the buildpack") }
                let scratch = String(cString: made)
                defer { try? FileManager.default.removeItem(atPath: scratch) }
                let dir = DataDir(root: URL(fileURLWithPath: scratch))
                try dir.create()
                let keg = try Keg(dataDir: dir)
                var st = stat()
                guard stat(directory, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
                    throw KbuildError(.notFound, "failed to add buildpack: \(directory) is not a directory")
                }
                let tree = try keg.put(path: directory)
                try BuildpackStore.check(tree: tree, keg: keg, what: directory)
                try await KegRemote(baseURL: URL(string: client.base)!, token: client.token, client: client.http).publish([tree], from: keg)
                let named = name ?? URL(fileURLWithPath: directory).standardizedFileURL.lastPathComponent
                pack = try await client.addBuildpack(API.AddBuildpack(name: named, tree: tree))
            }
            say("\(pack.name) \(pack.tree)")
            return
        }
        let apps = try global.openApps()
        let store = BuildpackStore(keg: apps.keg, refs: apps.refs)
        let pack = BuildpackStore.isGitURL(directory)
            ? try await store.add(gitURL: directory, name: name, actor: currentActor)
            : try await store.add(directory: directory, name: name, actor: currentActor)
        say("\(pack.name) \(pack.tree)")
    }
}

struct BuildpackLs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "Buildpacks in detection order.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let packs: [Buildpack]
        if let client = try global.remoteClient() {
            packs = try await client.buildpacks()
        } else {
            let apps = try global.openApps()
            let store = BuildpackStore(keg: apps.keg, refs: apps.refs)
            try await store.registerShipped(actor: currentActor)
            packs = try await store.list()
        }
        if json { return try printJSON(packs) }
        for pack in packs { say("\(pack.name)  \(pack.tree)") }
    }
}

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print an app's process logs, or a build's log.",
        discussion: """
            kbuild logs APP [--ps web.1] [--lines N] [--since 10m] [--release v7] [--tail]: the output of the app's
            processes, stopped ones and earlier releases' too, merged by time, each line prefixed with its time,
            process and short commit. kbuild logs BUILD: a build's log, kept in the Keg for good; BUILD is a
            build KID or a unique prefix of one (as pushes print it: Build K-1234abcd). kbuild logs BUILD --tail:
            a queued or running build's log from its start, as its worker writes it, until the build ends.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "An app, or a build's KID or a prefix of 8+ hex digits.") var target: String
    @Option(help: "Only this process, e.g. web.1.") var ps: String?
    @Option(help: "How many recent lines.") var lines = 100
    @Option(help: "Every line since then (e.g. 10m, 1h).") var since: String?
    @Option(help: "Only processes of this release (e.g. v7).") var release: String?
    @Flag(help: "Keep printing new lines until interrupted (a build's: until it ends).") var tail = false

    func run() async throws {
        if target.hasPrefix("K-") {
            return try await buildLog()
        }
        let client = try global.client()
        let sinceSeconds = try since.map { Int(try parseDuration($0)) }
        func fetch() async throws -> String {
            let response = try await client.logs(target, lines: lines, process: ps, release: release, since: sinceSeconds)
            return String(decoding: Data(buffer: try await response.body.collect(upTo: 64 << 20)), as: UTF8.self)
        }
        if let sinceSeconds {
            // Everything since then: streamed through, however large.
            let response = try await client.logs(target, lines: lines, process: ps, release: release, since: sinceSeconds)
            for try await chunk in response.body { writeOut(Array(chunk.readableBytesView)) }
            guard tail else { return }
        }
        guard tail else { return writeOut(Array(try await fetch().utf8)) }
        // --tail: one response the server keeps pushing new lines down; asked again (without the recent lines) when it ends.
        var backlog = sinceSeconds == nil ? lines : 0
        while true {
            do {
                let response = try await client.logs(target, lines: backlog, process: ps, release: release, since: nil, follow: true)
                for try await chunk in response.body { writeOut(Array(chunk.readableBytesView)) }
            } catch let error as KbuildError where error.code == .notFound || error.code == .unauthorized || error.code == .forbidden {
                throw error
            } catch {
                FileHandle.standardError.write(Data("kbuild logs: \((error as? KbuildError)?.message ?? "\(error)"); following again\n".utf8))
            }
            backlog = 0
            try await Task.sleep(for: .seconds(1))
        }
    }

    func buildLog() async throws {
        let prefix = try KIDPrefix(parsing: target)
        if tail {
            // Pushed by the control plane as the worker writes it, wherever the worker is.
            let response = try await global.client().followBuildLog(prefix.description)
            for try await chunk in response.body { writeOut(Array(chunk.readableBytesView)) }
            return
        }
        if let client = try global.remoteClient() { return writeOut(try await client.buildLog(prefix.description)) }
        let keg = try global.openKeg()
        let refs = try global.openRefs()
        let matches = try await refs.list(prefix: Schema.buildResults).filter {
            if case .buildResult(let build) = Schema.Key($0.name) { build.hex.hasPrefix(prefix.hex) } else { false }
        }
        guard let ref = matches.first else {
            throw KbuildError(.notFound, "no build \(prefix) has finished here (a build KID, as a push prints it: Build K-…)")
        }
        guard matches.count == 1 else {
            throw KbuildError(.ambiguous, "build prefix \(prefix) matches \(matches.count) builds; give more digits")
        }
        let record = try await Records.get(BuildRecord.self, ref.kid, from: keg, what: "build")
        guard let log = record.log else { throw KbuildError(.notFound, "build \(record.build.short) has no log") }
        writeOut(try keg.logicalBytes(log, maxWhole: 1 << 30))
    }
}
