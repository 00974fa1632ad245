public import KbuildCore
public import Keg
public import KbuildState
import Builds
import Foundation

/// Apps and their bare git repositories (`<data>/git/APP.git`), each with
/// kbuild's pre-receive hook.
public struct AppStore: Sendable {
    public let keg: Keg
    public let refs: any RefStore

    public init(keg: Keg, refs: any RefStore) {
        self.keg = keg
        self.refs = refs
    }

    static func ref(_ name: String) throws -> RefName {
        try checkName(name)
        return try Schema.app(name)
    }

    public static func gitRoot(_ dataDir: DataDir) -> String { dataDir.root.path + "/git" }
    public func repository(_ name: String) -> String { AppStore.gitRoot(keg.dataDir) + "/\(name).git" }

    public func get(_ name: String) async throws -> AppRecord {
        guard let ref = try await refs.get(try AppStore.ref(name)) else {
            throw KbuildError(.notFound, "no app named \(name.debugQuoted): create it with `kbuild apps:create \(name)`")
        }
        return try await Records.get(AppRecord.self, ref.kid, from: keg, what: "app")
    }

    public func list() async throws -> [AppRecord] {
        var apps: [AppRecord] = []
        for ref in try await refs.list(prefix: Schema.apps) {
            guard case .app = Schema.Key(ref.name) else { continue }
            apps.append(try await Records.get(AppRecord.self, ref.kid, from: keg, what: "app"))
        }
        return apps
    }

    /// Creates the app and its repository; `.conflict` when it exists.
    /// `kbuild`: the executable the hook runs.
    public func create(_ app: AppRecord, kbuild: String, actor: String) async throws {
        let ref = try AppStore.ref(app.name)
        guard try await refs.get(ref) == nil else { throw KbuildError(.conflict, "failed to create app \(app.name): it exists already") }
        guard !app.deployBranch.isEmpty, !app.deployBranch.contains(".."), !app.deployBranch.hasPrefix("/"),
              app.deployBranch.utf8.allSatisfy({ $0 > 0x20 && $0 != 0x7f && !"~^:?*[\\".utf8.contains($0) })
        else { throw KbuildError(.invalidArgument, "invalid deploy branch \(app.deployBranch.debugQuoted)") }
        let repo = repository(app.name)
        try makeRepository(app, kbuild: kbuild)
        do {
            try await refs.compareAndSwap(ref, to: try Records.put(app, in: keg), expecting: .absent, actor: actor)
        } catch {
            // Nothing half-made: no repository without its record.
            try? FileManager.default.removeItem(atPath: repo)
            throw error
        }
    }

    /// Makes the app's bare repository with kbuild's hook (built aside, renamed into place); one that exists is kept.
    public func makeRepository(_ app: AppRecord, kbuild: String) throws {
        let root = AppStore.gitRoot(keg.dataDir)
        if mkdir(root, 0o700) != 0 && errno != EEXIST { throw KbuildError.syscall("mkdir", root, verb: "create app \(app.name)") }
        let repo = repository(app.name)
        if FileManager.default.fileExists(atPath: repo) { return }
        let tmp = root + "/.tmp-\(app.name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: tmp)
        do {
            try Git.run(["init", "--quiet", "--bare", "--initial-branch=\(app.deployBranch)", tmp])
            // Pushes of any size over HTTP; no deleting or rewriting the deploy branch behind kbuild's back.
            try Git.run(["--git-dir", tmp, "config", "http.receivepack", "true"])
            try Git.run(["--git-dir", tmp, "config", "receive.denyDeleteCurrent", "refuse"])
            try installHook(at: tmp, app: app.name, kbuild: kbuild)
            if rename(tmp, repo) != 0 {
                throw KbuildError.syscall("rename", repo, verb: "create app \(app.name)")
            }
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw error
        }
    }

    /// Changes an app's record by compare-and-swap (retried when another change came first).
    @discardableResult
    public func update(_ name: String, actor: String, _ change: @Sendable (inout AppRecord) async throws -> Void) async throws -> AppRecord {
        let updated = try await refs.update(try AppStore.ref(name), as: AppRecord.self, in: keg, what: "app", actor: actor) { found in
            guard var record = found else {
                throw KbuildError(.notFound, "no app named \(name.debugQuoted): create it with `kbuild apps:create \(name)`")
            }
            try await change(&record)
            return record
        }
        return updated.record!
    }

    /// Writes (or rewrites, when kbuild moved) the pre-receive hook of every app.
    public func installHooks(kbuild: String) async throws {
        for app in try await list() where FileManager.default.fileExists(atPath: repository(app.name)) {
            try installHook(at: repository(app.name), app: app.name, kbuild: kbuild)
        }
    }

    func installHook(at repo: String, app: String, kbuild: String) throws {
        let hook = repo + "/hooks/pre-receive"
        let text = """
            #!/bin/sh
            # Written by kbuild: builds and records every push to the deploy branch.
            exec \(shellQuote(kbuild)) hook pre-receive --app \(app) --data-dir \(shellQuote(keg.dataDir.root.path))

            """
        if (try? String(contentsOfFile: hook, encoding: .utf8)) == text { return }
        let tmp = hook + ".tmp"
        try Data(text.utf8).write(to: URL(fileURLWithPath: tmp))
        guard chmod(tmp, 0o755) == 0, rename(tmp, hook) == 0 else { throw KbuildError.syscall("rename", hook, verb: "install the hook of \(app)") }
    }
}

/// `'…'` for sh.
public func shellQuote(_ s: String) -> String {
    "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// The git executable, for the few things done by running it (in the current directory).
public enum Git {
    /// Whether git exits 0 (its output is dropped).
    public static func succeeds(_ args: [String]) -> Bool {
        (try? run(args)) != nil
    }

    /// What git prints (trimmed), or nil when it fails.
    public static func output(_ args: [String]) -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return p.terminationStatus == 0 && !text.isEmpty ? text : nil
    }

    /// Runs git; a failure throws with git's own message. `environment` is added to kbuild's own.
    public static func run(_ args: [String], environment: [String: String] = [:]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        p.arguments = args
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let message = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw KbuildError(.io, "git \(args.joined(separator: " ")) failed: \(String(decoding: message, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
