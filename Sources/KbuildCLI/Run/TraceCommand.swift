import ArgumentParser
import Foundation
import KbuildClient
import KbuildCore
import KbuildState
import Trace

/// `kbuild trace X`: from anything kbuild runs or made, up to the commit and down to what runs it.
struct TraceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Trace a process, release, image, build, source or commit: up to its commit, down to what runs it now.",
        discussion: """
            X is a host PID (as ps shows it; a process inside an app's sandbox traces to that app's process), a KID or
            prefix of one (process, release, image, build, source), APP, APP.web.1, APP@v7, a commit sha, or a request id
            (the X-Request-Id of a response the router gave).
            APP@v6..v7 shows what changed between two releases: files (with a diff), stack, buildpacks, config keys
            (never values). --file PATH prints a file as it is in the revision the process (or release) runs.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "What to trace.") var target: String
    @Option(help: "Print this file of the traced revision, byte for byte.") var file: String?
    @Option(help: "For a PID: the node it runs on (PIDs are per machine; run on the node's machine, the PID's parents are found too).")
    var node: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let parsed = try TraceTarget(parsing: target)
        if let remote = try global.remoteClient() {
            if case .releaseRange = parsed {
                let diff = try await remote.traceDiff(target)
                return json ? try printJSON(diff) : printDiff(diff)
            }
            if let file { return writeOut(try await remote.traceFile(target, path: file)) }
            // A PID on this machine: its ancestors go along, so the control plane finds the sandbox it runs in.
            var ancestors: [Int32]?
            if case .pid(let pid) = parsed { ancestors = ProcFS.ancestry(of: pid) }
            let result = try await remote.trace(target, node: node, ancestors: ancestors)
            return json ? try printJSON(result) : printResult(result)
        }
        let tracer = Tracer(keg: try global.openKeg(), refs: try global.openRefs(), requestLog: global.dir.router.path)
        if case .releaseRange(let app, let from, let to) = parsed {
            let diff = try await tracer.diff(app: app, from: from, to: to)
            return json ? try printJSON(diff) : printDiff(diff)
        }
        let result = try await tracer.trace(parsed, lookup: PIDLookup(node: node))
        if let file {
            guard let source = result.up.source else { throw KbuildError(.notFound, "\(result.subject) has no pushed source to read \(file) from") }
            return writeOut(try tracer.file(file, in: source.source, commit: source.commit))
        }
        if json { return try printJSON(result) }
        printResult(result)
    }

    func printResult(_ r: TraceResult) {
        sayText("=== \(r.subject)")
        if let p = r.up.process {
            let state = p.state.map { ", \($0) now" } ?? ", not running now"
            sayText("process  \(p.kid.short)  \(p.record.app).\(p.record.name) on node \(p.record.node), host PID \(p.record.hostPID), port \(p.record.port), started \(shortDate(p.record.startedAt))\(state)")
        }
        if let rel = r.up.release {
            sayText("release  \(rel.app) v\(rel.version) (\(rel.kid.short)): \(rel.description), by \(rel.createdBy) at \(shortDate(rel.createdAt))")
            sayText("image    \(rel.image)")
        }
        if let b = r.up.build {
            sayText("build    \(b.build.short) on stack \(b.stack), buildpacks \(b.buildpacks.joined(separator: ", "))\(b.log.map { _ in "; log: kbuild logs \(b.build.short)" } ?? "")")
        }
        if let s = r.up.source {
            sayText("source   \(s.source.short)")
            sayText("commit   \(s.commit) by \(s.author) <\(s.email)>")
            sayText("         \(s.message.split(separator: "\n").first.map(String.init) ?? "")")
            sayText("         pushed by \(s.pushedBy) at \(shortDate(s.pushedAt)) to \(s.repository) (\(s.ref))")
        }
        if r.up.process == nil {
            if !r.releases.isEmpty {
                sayText("releases using it:")
                for rel in r.releases { sayText("  \(rel.app) v\(rel.version)  \(rel.description)  image \(rel.image.short)") }
            }
            sayText(r.processes.isEmpty ? "running it now: nothing" : "running it now:")
            for p in r.processes {
                sayText("  \(p.record.app).\(p.record.name)  \(p.kid.short)  node \(p.record.node)  host PID \(p.record.hostPID)  v\(p.record.version)  \(p.state ?? "")")
            }
        }
    }

    func printDiff(_ d: ReleaseDiff) {
        sayText("=== \(d.app) v\(d.from.version)..v\(d.to.version)")
        sayText("commit     \(d.commits[0].prefix(12)) → \(d.commits[1].prefix(12))")
        sayText("image      \(d.from.image.short) → \(d.to.image.short)")
        sayText("stack      \(d.stack[0] == d.stack[1] ? "unchanged (\(d.stack[0]))" : "\(d.stack[0]) → \(d.stack[1])")")
        sayText("buildpacks \(d.buildpacks[0] == d.buildpacks[1] ? "unchanged" : "\(d.buildpacks[0].joined(separator: ",")) → \(d.buildpacks[1].joined(separator: ","))")")
        let config = d.configAdded.map { "+\($0)" } + d.configRemoved.map { "-\($0)" } + d.configChanged.map { "~\($0)" }
        sayText("config     \(config.isEmpty ? "unchanged" : config.joined(separator: " ")) (values hidden)")
        sayText("files      \(d.files.isEmpty ? "unchanged" : "")")
        for f in d.files { sayText("  \(f.change == "added" ? "A" : f.change == "removed" ? "D" : "M") \(f.path)") }
        if !d.patch.isEmpty { writeOut(Array(("\n" + d.patch).utf8)) }
    }
}

/// A line of trace output: authors, messages, paths and descriptions come from
/// whoever pushed, so their control characters are shown, not obeyed.
private func sayText(_ line: String) { say(line.terminalSafe) }
