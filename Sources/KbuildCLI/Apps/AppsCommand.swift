import ArgumentParser
import Builds
import Foundation
import GitGateway
import KbuildClient
import KbuildCore
import KbuildState

extension GlobalOptions {
    func openApps() throws -> AppStore {
        try dir.create()
        return AppStore(keg: try openKeg(), refs: try openRefs())
    }
}

/// The kbuild executable itself, as hooks and sshd's forced command run it.
var kbuildExecutable: String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

struct AppsCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apps:create",
        abstract: "Create an app and its git repository.",
        discussion: """
            Then, in the app's repository: kbuild git:remote APP, and git push kbuild main.
            App names are DNS labels: 1 to 63 of a-z, 0-9 and '-', starting with a letter.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app's name.") var app: String
    @Option(help: "The stack it builds and runs on (debian: the newest debian-N there is; the app keeps the one it got).") var stack = "debian"
    @Option(help: "What its builds reach: egress (the outside through NAT, never the host or other apps) or none (loopback only).") var buildNetwork = "egress"
    @Option(help: "The branch whose pushes are built and deployed.") var deployBranch = "main"
    @Option(help: "Time limit of a build (e.g. 15m).") var buildTimeout = "15m"
    @Option(help: "Memory limit of a build.") var buildMemory = "2G"
    @Option(help: "CPU limit of a build, in cores (default: none).") var buildCpus: Double?
    @Option(help: "Disk a build may write (/app, /cache and /env together; the app layer is at most this, the cache kept half).") var buildDisk = "2G"
    @Option(help: "Largest file a push may carry.") var maxFileSize = "100M"

    func run() async throws {
        try AppStore.checkName(app)
        let limits = BuildLimits(memory: try parseBytes(buildMemory, what: "build memory"), cpus: buildCpus,
                                 timeout: try parsePositiveDuration(buildTimeout, what: "build timeout"),
                                 disk: try parseBytes(buildDisk, what: "build disk"))
        guard limits.memory >= 16 << 20 else { throw KbuildError(.invalidArgument, "invalid build memory \(buildMemory): at least 16M") }
        guard limits.disk >= 16 << 20, limits.disk <= 1 << 40 else {
            throw KbuildError(.invalidArgument, "invalid build disk \(buildDisk): from 16M to 1T")
        }
        _ = try BuildNetwork(parsing: buildNetwork)
        let request = API.CreateApp(name: app, stack: stack, deployBranch: deployBranch, buildNetwork: buildNetwork, build: limits,
                                    maxFileSize: try parseBytes(maxFileSize, what: "max file size"))
        if let remote = try global.remoteClient() {
            let made = try await remote.createApp(request)
            say("Created \(app) on \(remote.base) (stack \(made.app.stack), builds with network \(made.app.buildNetwork.rawValue), deploys \(made.app.deployBranch))")
            say("Next: git remote add kbuild \(made.gitURL) in your app's repository, then git push kbuild \(made.app.deployBranch) (git asks for a password: give your token)")
            return
        }
        let apps = try global.openApps()
        let record = try await apps.create(request, kbuild: kbuildExecutable, actor: currentActor)
        say("Created \(app) (stack \(record.stack), builds with network \(record.buildNetwork.rawValue), deploys \(record.deployBranch)); repository \(apps.repository(app))")
        say("Next: kbuild git:remote \(app) in your app's repository, then git push kbuild \(record.deployBranch)")
    }
}

struct AppsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "apps", abstract: "List apps.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        if let remote = try global.remoteClient() {
            let apps = try await remote.apps()
            if json { return try printJSON(apps) }
            for app in apps { say("\(app.name)  stack \(app.stack)  build-network \(app.buildNetwork ?? "-")  deploys \(app.deployBranch)") }
            return
        }
        let apps = try await global.openApps().list()
        if json { return try printJSON(apps) }
        for app in apps { say("\(app.name)  stack \(app.stack)  build-network \(app.buildNetwork.rawValue)  deploys \(app.deployBranch)") }
    }
}

struct AppsSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apps:set",
        abstract: "Change an app's settings: build-network=egress|none, stack=NAME.",
        discussion: """
            Each takes effect at the app's next build (git push); what runs keeps running.
            stack=debian moves it to the newest debian-N there is (Heroku's stack:set).
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Argument(help: "KEY=VALUE, one or more.") var settings: [String] = []

    func run() async throws {
        guard !settings.isEmpty else { throw ValidationError("give at least one KEY=VALUE (\(AppRecord.settings.joined(separator: ", ")))") }
        var change = API.AppSettings(buildNetwork: nil, stack: nil)
        for setting in settings {
            guard let eq = setting.firstIndex(of: "=") else {
                throw KbuildError(.invalidArgument, "invalid setting \(setting.debugQuoted): want KEY=VALUE")
            }
            let (key, value) = (String(setting[..<eq]), String(setting[setting.index(after: eq)...]))
            switch key {
            case "build-network": change.buildNetwork = value
            case "stack": change.stack = value
            default: throw KbuildError(.invalidArgument, "unknown setting \(key.debugQuoted): want one of \(AppRecord.settings.joined(separator: ", "))")
            }
        }
        let record = if let client = try global.remoteClient() {
            try await client.changeSettings(app, change)
        } else {
            try await global.openApps().changeSettings(app, change, actor: currentActor)
        }
        say("\(app): stack \(record.stack), build-network \(record.buildNetwork.rawValue) (from its next build)")
    }
}

struct GitRemote: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "git:remote",
        abstract: "Add a `kbuild` remote for APP to the git repository in the current directory.",
        discussion: """
            Over HTTP (the default) the remote is the URL of the running `kbuild up`, and git
            gets the token from `kbuild git-credential`, so it is never written into .git/config.
            With --ssh USER@HOST[:PORT] the remote goes through sshd (add your key with keys:add).
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Option(help: "The remote's name.") var remote = "kbuild"
    @Option(help: "Push over SSH to USER@HOST[:PORT] instead of HTTP.") var ssh: String?

    func run() async throws {
        let remoteClient = try global.remoteClient()
        if let remoteClient { _ = try await remoteClient.app(app) } else { _ = try await global.openApps().get(app) }
        let url: String
        var config: [(String, String)] = []
        if let ssh {
            guard ssh.contains("@"), !ssh.contains("/"), !ssh.contains(" ") else {
                throw KbuildError(.invalidArgument, "invalid --ssh \(ssh.debugQuoted): want USER@HOST or USER@HOST:PORT")
            }
            url = "ssh://\(ssh)/\(app).git"
        } else if let remoteClient {
            // Another machine's kbuild: its URL, the token from KBUILD_TOKEN or kbuild login (never written into .git/config),
            // and over https the CA kbuild was given (KBUILD_CA_FILE).
            url = remoteClient.base + "/\(app).git"
            config.append(("credential.\(remoteClient.base).helper", "!\(shellQuote(kbuildExecutable)) git-credential"))
            if let ca = ProcessInfo.processInfo.environment["KBUILD_CA_FILE"], !ca.isEmpty, remoteClient.base.hasPrefix("https://") {
                config.append(("http.\(remoteClient.base).sslCAInfo", URL(fileURLWithPath: ca).standardizedFileURL.path))
            }
        } else {
            guard let server = try? String(contentsOf: global.dir.serverURLFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
                  server.hasPrefix("http://")
            else {
                throw KbuildError(.notFound, "kbuild is not running here (no \(global.dir.serverURLFile.path)): start it with `kbuild up`")
            }
            let user = currentActor.filter { $0.isLetter || $0.isNumber || "._-".contains($0) }
            url = server.replacingOccurrences(of: "http://", with: "http://\(user.isEmpty ? "kbuild" : user)@") + "/\(app).git"
            let base = String(url[..<(url.range(of: "/\(app).git")!.lowerBound)])
            config.append(("credential.\(base).helper", "!\(shellQuote(kbuildExecutable)) git-credential --data-dir \(shellQuote(global.dir.root.path))"))
        }
        let existing = Git.succeeds(["remote", "get-url", remote])
        try Git.run(existing ? ["remote", "set-url", remote, url] : ["remote", "add", remote, url])
        for (key, value) in config { try Git.run(["config", key, value]) }
        say("\(existing ? "Updated" : "Added") remote \(remote): \(url)")
        say("Deploy with: git push \(remote) main")
    }
}

struct GitCredential: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "git-credential",
        abstract: "git's credential helper for kbuild remotes (set up by git:remote): gives the token as the password."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "get, store or erase (as git calls it).") var action: String

    func run() throws {
        guard action == "get" else { return }  // store and erase: the token lives in the data dir
        var user: String?
        var asked: (scheme: String?, host: String?) = (nil, nil)
        while let line = readLine() {
            if line.isEmpty { break }
            if line.hasPrefix("username=") { user = String(line.dropFirst(9)) }
            if line.hasPrefix("protocol=") { asked.scheme = String(line.dropFirst(9)) }
            if line.hasPrefix("host=") { asked.host = String(line.dropFirst(5)) }
        }
        // The CLI's own token when it is pointed at another machine (KBUILD_TOKEN, kbuild login), else this data
        // dir's; given only to the server it belongs to (after a login elsewhere, nothing for the old remote).
        let token: String
        if let remote = try global.remoteClient() {
            let base = URL(string: remote.base)
            let host = base.map { u in u.port.map { "\(u.host ?? ""):\($0)" } ?? (u.host ?? "") }
            guard asked.host == nil || (asked.host == host && asked.scheme == base?.scheme) else { return }
            token = remote.token
        } else {
            token = try AdminToken.loadOrCreate(in: global.dir)
        }
        print("username=\(user ?? "kbuild")")
        print("password=\(token)")
    }
}

struct KeysAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys:add",
        abstract: "Allow an SSH public key to push (written to <data-dir>/ssh/authorized_keys).",
        discussion: """
            Point sshd at that file for the user pushes arrive as (builds run sandboxes, which
            need root), e.g. in sshd_config:
              Match User root
                AuthorizedKeysFile .ssh/authorized_keys <data-dir>/ssh/authorized_keys
            Each key may only run `kbuild git-shell` (receive-pack and upload-pack of an app).
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The public key file (e.g. ~/.ssh/id_ed25519.pub), or - for stdin.", valueName: "file")) var file: String
    @Option(help: "Who the key belongs to (default: the key's comment, else your login name).") var name: String?

    func run() async throws {
        let text: String
        if file == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            guard let read = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw KbuildError(.notFound, "failed to read the key file \(file)")
            }
            text = read
        }
        let comment = (try? SSHKeys.parsePublicKey(text).comment)?.split(separator: "@").first.map(String.init)
        let named = name ?? comment ?? currentActor
        let key: API.SSHKey
        if let client = try global.remoteClient() {
            key = try await client.addKey(publicKey: text, name: named)
        } else {
            try global.dir.create()
            key = API.SSHKey(try SSHKeys(dataDir: global.dir, kbuild: kbuildExecutable).add(publicKey: text, name: named))
        }
        say("Added \(key.type) key \(key.fingerprint) as \(key.name)")
    }
}

struct KeysList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keys", abstract: "List the SSH keys that may push.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let keys = if let client = try global.remoteClient() {
            try await client.keys()
        } else {
            try SSHKeys(dataDir: global.dir, kbuild: kbuildExecutable).list().map(API.SSHKey.init)
        }
        if json { return try printJSON(keys) }
        for key in keys { say("\(key.name)  \(key.type)  \(key.fingerprint)") }
    }
}

struct KeysRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keys:remove", abstract: "Remove an SSH key by name.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The key's name.") var name: String

    func run() async throws {
        if let client = try global.remoteClient() {
            try await client.removeKey(name: name)
        } else {
            try SSHKeys(dataDir: global.dir, kbuild: kbuildExecutable).remove(name: name)
        }
        say("Removed \(name)")
    }
}

struct BuildsCachePurge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "builds:cache:purge",
        abstract: "Drop an app's build cache, its own dependency layers and its git buildpacks' clones; its next push builds anew.",
        discussion: """
            Like Dokku's repo:purge-cache: the next push rebuilds even a tree built before and installs
            its dependencies again, so unpinned requirements move forward. What runs keeps running.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String

    func run() async throws {
        let purged = if let client = try global.remoteClient() {
            try await client.purgeBuildCache(app)
        } else {
            try await global.openApps().purgeBuildCache(app, actor: currentActor)
        }
        let (layers, clones) = (purged.dependencyLayers, purged.gitBuildpacks)
        let dropped = [layers > 0 ? "\(layers) dependency layer\(layers == 1 ? "" : "s") of its own" : nil,
                       clones > 0 ? "\(clones) git buildpack\(clones == 1 ? "" : "s") (cloned again at the next push)" : nil].compactMap { $0 }
        say("Purged the build cache of \(app)\(dropped.isEmpty ? "" : " and " + dropped.joined(separator: " and ")): its next push builds anew (cache epoch \(purged.cacheEpoch))")
    }
}

extension API.SSHKey {
    init(_ key: SSHKeys.Key) { self.init(name: key.name, type: key.type, fingerprint: key.fingerprint) }
}
