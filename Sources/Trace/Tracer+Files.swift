public import KbuildCore
import Cluster
import Foundation
import Keg
import Releases
public import KbuildState

extension Tracer {
    /// The bytes of `path` as it is in a source tree.
    public func file(_ path: String, in source: KID, commit: String) throws -> [UInt8] {
        let parts = path.split(separator: "/").map(String.init).filter { $0 != "." && !$0.isEmpty }
        guard !parts.isEmpty, !parts.contains("..") else {
            throw KbuildError(.invalidArgument, "invalid path \(path.debugQuoted): a path in the app's tree, such as app.py or src/main.py")
        }
        var tree = source
        for (i, name) in parts.enumerated() {
            guard let entry = try keg.tree(tree).entries.first(where: { $0.nameString == name }) else {
                throw KbuildError(.notFound, "no file \(path) in commit \(commit.prefix(7)) (source \(source.short))")
            }
            if i == parts.count - 1 {
                guard entry.type == .file, let kid = entry.kid else {
                    throw KbuildError(.invalidArgument, "\(path) is a \(entry.type == .directory ? "directory" : "symlink") in commit \(commit.prefix(7)), not a file")
                }
                return try keg.logicalBytes(kid, maxWhole: 1 << 30)
            }
            guard entry.type == .directory, let kid = entry.kid else {
                throw KbuildError(.notFound, "no file \(path) in commit \(commit.prefix(7)) (\(parts[0...i].joined(separator: "/")) is not a directory)")
            }
            tree = kid
        }
        throw KbuildError(.notFound, "no file \(path)")
    }

    public func diff(app: String, from: Int64, to: Int64) async throws -> ReleaseDiff {
        let store = ReleaseStore(keg: keg, refs: refs)
        let a = try await store.get(app, version: from), b = try await store.get(app, version: to)
        let ca = try await chain(release: a.kid), cb = try await chain(release: b.kid)
        var files: [ReleaseDiff.FileChange] = []
        var patch = ""
        if let sa = ca.source?.source, let sb = cb.source?.source {
            try compare(sa, sb, prefix: "", into: &files, patch: &patch)
        }
        let va = try await configVars(a.release.config), vb = try await configVars(b.release.config)
        return ReleaseDiff(
            app: app, from: ca.release!, to: cb.release!,
            commits: [ca.source?.commit, cb.source?.commit].map { $0 ?? "-" },
            files: files, patch: patch,
            stack: [ca.build?.stack ?? "-", cb.build?.stack ?? "-"],
            buildpacks: [ca.build?.buildpacks ?? [], cb.build?.buildpacks ?? []],
            configAdded: vb.keys.filter { va[$0] == nil }.sorted(),
            configRemoved: va.keys.filter { vb[$0] == nil }.sorted(),
            configChanged: vb.keys.filter { va[$0] != nil && va[$0] != vb[$0] }.sorted())
    }

    func configVars(_ kid: KID) async throws -> [String: String] {
        try await reader.record(ConfigVars.self, kid, what: "config").vars
    }

    /// Walks two trees side by side; unchanged subtrees (same KID) are skipped whole.
    func compare(_ a: KID?, _ b: KID?, prefix: String, into files: inout [ReleaseDiff.FileChange], patch: inout String) throws {
        guard a != b else { return }
        let ea = try a.map { try keg.tree($0).entries } ?? [], eb = try b.map { try keg.tree($0).entries } ?? []
        let names = Set(ea.map(\.nameString)).union(eb.map(\.nameString)).sorted()
        for name in names {
            let x = ea.first { $0.nameString == name }, y = eb.first { $0.nameString == name }
            let path = prefix + name
            if x?.type == .directory || y?.type == .directory {
                try compare(x?.type == .directory ? x?.kid : nil, y?.type == .directory ? y?.kid : nil, prefix: path + "/", into: &files, patch: &patch)
                if x?.type == .directory && y != nil && y?.type != .directory { files.append(.init(change: "added", path: path)) }
                if y?.type == .directory && x != nil && x?.type != .directory { files.append(.init(change: "removed", path: path)) }
                continue
            }
            switch (x, y) {
            case (nil, .some): files.append(.init(change: "added", path: path))
            case (.some, nil): files.append(.init(change: "removed", path: path))
            case (.some(let x), .some(let y)) where x.kid != y.kid || x.target != y.target || x.mode != y.mode:
                files.append(.init(change: "changed", path: path))
                if x.type == .file, y.type == .file, let kx = x.kid, let ky = y.kid, x.size <= 256 << 10, y.size <= 256 << 10 {
                    patch += unifiedDiff(try keg.logicalBytes(kx), try keg.logicalBytes(ky), path: path)
                }
            default: break
            }
        }
    }

    /// `diff -u` of two texts (nothing for binary files).
    func unifiedDiff(_ a: [UInt8], _ b: [UInt8], path: String) -> String {
        guard !a.contains(0), !b.contains(0) else { return "Binary file \(path) changed\n" }
        let dir = NSTemporaryDirectory() + "kbuild-trace-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard (try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)) != nil else { return "" }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = FileManager.default.createFile(atPath: dir + "/a", contents: Data(a))
        _ = FileManager.default.createFile(atPath: dir + "/b", contents: Data(b))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/diff")
        p.arguments = ["-u", "--label", "a/" + path, "--label", "b/" + path, dir + "/a", dir + "/b"]
        let out = Pipe()
        p.standardOutput = out
        guard (try? p.run()) != nil else { return "" }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
