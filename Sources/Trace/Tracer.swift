public import Cluster
public import KbuildCore
public import Keg
public import KbuildState
import Builds
import Foundation
import Releases

/// Follows the links between records: process → release → image → build →
/// source → commit, and back down. Reads only refs and immutable records.
public struct Tracer: Sendable {
    let reader: ClusterReader
    /// Where images are (for `--file`) and records too.
    let keg: Keg
    var refs: any RefStore { reader.refs }

    /// Where the router's request log is (`DataDir.router`), for request ids.
    let requestLog: String?

    public init(keg: Keg, refs: any RefStore, requestLog: String? = nil) {
        reader = ClusterReader(records: keg, refs: refs)
        self.keg = keg
        self.requestLog = requestLog
    }

    /// A tracer sharing `reader`'s cache of decoded records (a server's, across requests: records never change).
    public init(reader: ClusterReader, keg: Keg, requestLog: String? = nil) {
        self.reader = reader
        self.keg = keg
        self.requestLog = requestLog
    }

    /// `lookup` says where a PID is looked up (see `PIDLookup`).
    public func trace(_ target: TraceTarget, lookup: PIDLookup = PIDLookup()) async throws -> TraceResult {
        switch target {
        case .pid(let pid):
            let (link, via) = try await process(pid: pid, lookup: lookup)
            return try await fromProcess(link, subject: via == pid ? "PID \(pid)" : "PID \(pid) (in the sandbox of PID \(via))")
        case .process(let app, let name):
            let now = try await running(app: app).filter { $0.record.name == name }
            guard let link = now.first else {
                throw KbuildError(.notFound, "no process \(app).\(name) runs now (kbuild ps \(app) lists them)")
            }
            return try await fromProcess(link, subject: "\(app).\(name)")
        case .app(let app):
            guard let current = try await ReleaseStore(keg: keg, refs: refs).current(app) else {
                if try await refs.get(try Schema.app(app)) == nil {
                    // A request id may look like an app name (order-4711).
                    if let dir = requestLog, !RequestLog.find(app, in: dir).isEmpty { return try await fromRequest(app) }
                    throw KbuildError(.notFound, "no app named \(app), nor a request with that id")
                }
                throw KbuildError(.notFound, "\(app) has no release yet")
            }
            return try await fromRelease(current.kid, subject: app)
        case .release(let app, let version):
            let entry = try await ReleaseStore(keg: keg, refs: refs).get(app, version: version)
            return try await fromRelease(entry.kid, subject: "\(app)@v\(version)")
        case .releaseRange:
            throw KbuildError(.invalidArgument, "a release range is a diff: use Tracer.diff")
        case .commit(let sha):
            return try await fromCommit(sha)
        case .request(let id):
            return try await fromRequest(id)
        case .kid(let prefix):
            return try await fromKID(prefix)
        }
    }

    // MARK: - Up

    func fromProcess(_ link: ProcessLink, subject: String) async throws -> TraceResult {
        var chain = try await chain(release: link.record.release)
        chain.process = link
        return TraceResult(subject: subject, up: chain, releases: chain.release.map { [$0] } ?? [], processes: [link])
    }

    func fromRelease(_ kid: KID, subject: String) async throws -> TraceResult {
        let chain = try await chain(release: kid)
        let release = try await reader.record(Release.self, kid, what: "release")
        let now = try await running(app: release.app).filter { $0.record.spec.image == release.image && $0.record.spec.config == release.config }
        return TraceResult(subject: subject, up: chain, releases: chain.release.map { [$0] } ?? [], processes: now)
    }

    /// release → build → source → commit.
    /// Every app's running processes with the commit each came from (`ps --all`, here and through the API).
    public func runningProcesses() async throws -> [API.RunningProcess] {
        var commits: [KID: String?] = [:]
        var rows: [API.RunningProcess] = []
        for p in try await running(app: nil) {
            // The release names its commit: no walk down its chain per process.
            if commits[p.record.release] == nil { commits[p.record.release] = try await reader.record(Release.self, p.record.release, what: "release").commit }
            rows.append(API.RunningProcess(app: p.record.app, name: p.record.name, node: p.record.node, hostPID: p.record.hostPID,
                                           process: p.kid, release: p.record.version, commit: commits[p.record.release] ?? nil, state: p.state))
        }
        return rows
    }

    public func chain(release kid: KID) async throws -> Chain {
        let r = try await reader.record(Release.self, kid, what: "release")
        var chain = Chain(release: ReleaseLink(app: r.app, version: r.version, kid: kid, description: r.description, createdBy: r.createdBy,
                                               createdAt: r.createdAt, image: r.image, config: r.config))
        if let build = r.build { chain.build = try await buildLink(build) }
        if let s = r.sourceRecord { chain.source = try await sourceLink(s) }
        return chain
    }

    func buildLink(_ build: KID) async throws -> BuildLink? {
        guard let ref = try await refs.get(try Schema.buildResult(build)) else { return nil }
        let b = try await reader.record(BuildRecord.self, ref.kid, what: "build")
        return BuildLink(build: build, stack: "\(b.inputs.stackName)@\(b.inputs.stack.short)", buildpacks: b.used.map { "\($0.name)@\($0.tree.short)" },
                         log: b.log, finishedAt: b.finishedAt)
    }

    /// The source tree a release was built from, when its source record is readable.
    func source(of release: Release) async -> KID? {
        guard let s = release.sourceRecord else { return nil }
        return try? await reader.record(SourceRecord.self, s, what: "source").source
    }

    func sourceLink(_ kid: KID) async throws -> SourceLink {
        let s = try await reader.record(SourceRecord.self, kid, what: "source")
        return SourceLink(record: kid, source: s.source, commit: s.commit, author: s.author, email: s.authorEmail, message: s.message,
                          pushedBy: s.pushedBy, pushedAt: s.pushedAt, repository: s.repository, ref: s.ref)
    }

    /// The process that answered a request: the router wrote down the process id; the
    /// app's process list says which process had that id at that time.
    func fromRequest(_ id: String) async throws -> TraceResult {
        let found = requestLog.map { RequestLog.find(id, in: $0) } ?? []
        guard let entry = found.first else {
            throw KbuildError(.notFound, "no request \(id) in the router's log (ids come back in each response's X-Request-Id header)")
        }
        // A client's own X-Request-Id need not be unique: more than one request sent it.
        guard found.count == 1 else {
            let list = found.suffix(10).map { "\($0.requestID) (\($0.app), \($0.method) \($0.path) → \($0.status) at \($0.time))" }
            throw KbuildError(.ambiguous, "\(found.count) requests were sent with X-Request-Id \(id); trace one by the router's own id (Kbuild-Request-Id): \(list.joined(separator: "; "))")
        }
        let subject = "request \(id) (\(entry.method) \(entry.path) → \(entry.status) at \(entry.time))"
        for change in try await refs.history(try Schema.processes(entry.app), limit: nil) {
            guard let kid = change.new, let record = try? await reader.record(ProcessRecord.self, kid, what: "process"),
                  record.id == entry.process, record.startedAt <= entry.time.addingTimeInterval(1) else { continue }
            let now = try await running(app: entry.app).first { $0.kid == kid }
            return try await fromProcess(ProcessLink(kid: kid, record: record, state: now?.state), subject: subject)
        }
        throw KbuildError(.notFound, "request \(id) was answered by \(entry.process), whose record is gone")
    }

    // MARK: - Down

    func fromCommit(_ sha: String) async throws -> TraceResult {
        let matches = try await refs.list(prefix: Schema.commits).filter {
            if case .commit(let commit) = Schema.Key($0.name) { commit.hasPrefix(sha) } else { false }
        }
        guard !matches.isEmpty else {
            // A name that looks like a sha may be an app.
            if try await refs.get(try Schema.app(sha)) != nil { return try await trace(.app(sha)) }
            // A request id of hex digits (the router makes 32 of them).
            if sha.count >= 8, let dir = requestLog, !RequestLog.find(sha, in: dir).isEmpty { return try await fromRequest(sha) }
            throw KbuildError(.notFound, "no pushed commit \(sha) (only commits pushed to a kbuild app are known), nor a request with that id")
        }
        guard matches.count == 1 else {
            throw KbuildError(.ambiguous, "commit prefix \(sha) matches \(matches.count) pushed commits; give more digits")
        }
        let link = try await sourceLink(matches[0].kid)
        return try await down(from: link, subject: "commit \(link.commit.prefix(12))") { $0.commit == link.commit }
    }

    /// The releases whose record satisfies `uses`, in every app, and what runs them now.
    func down(from source: SourceLink?, subject: String, up: Chain? = nil, _ uses: (Release) async -> Bool) async throws -> TraceResult {
        var releases: [ReleaseLink] = []
        var processes: [ProcessLink] = []
        for app in try await appNames() {
            var matched: [Release] = []
            for change in try await refs.history(try Schema.release(app), limit: nil) {
                guard let kid = change.new, let r = try? await reader.record(Release.self, kid, what: "release"), await uses(r) else { continue }
                if !releases.contains(where: { $0.kid == kid }) {
                    releases.append(ReleaseLink(app: app, version: r.version, kid: kid, description: r.description, createdBy: r.createdBy,
                                                createdAt: r.createdAt, image: r.image, config: r.config))
                    matched.append(r)
                }
            }
            if !matched.isEmpty {
                processes += try await running(app: app).filter { p in matched.contains { $0.image == p.record.spec.image } }
            }
        }
        return TraceResult(subject: subject, up: up ?? Chain(source: source), releases: releases.sorted { ($0.app, $0.version) < ($1.app, $1.version) },
                           processes: processes)
    }

    func fromKID(_ prefix: KIDPrefix) async throws -> TraceResult {
        var kinds: [KID: String] = [:]
        // Processes (every one started), releases and what they name.
        var releases: [KID: Release] = [:]
        for app in try await appNames() {
            for change in try await refs.history(try Schema.processes(app), limit: nil) {
                if let kid = change.new, kid.hex.hasPrefix(prefix.hex) { kinds[kid] = "process" }
            }
            for change in try await refs.history(try Schema.release(app), limit: nil) {
                guard let kid = change.new, let r = try? await reader.record(Release.self, kid, what: "release") else { continue }
                releases[kid] = r
                if kid.hex.hasPrefix(prefix.hex) { kinds[kid] = "release" }
                if r.image.hex.hasPrefix(prefix.hex) { kinds[r.image] = "image" }
                if let b = r.build, b.hex.hasPrefix(prefix.hex) { kinds[b] = "build" }
                if let s = r.sourceRecord {
                    if s.hex.hasPrefix(prefix.hex) { kinds[s] = "source record" }
                    if let src = try? await reader.record(SourceRecord.self, s, what: "source"), src.source.hex.hasPrefix(prefix.hex) { kinds[src.source] = "source" }
                }
            }
        }
        guard let (kid, kind) = kinds.first else {
            throw KbuildError(.notFound, "nothing kbuild ran or released is \(prefix) (a process, release, image, build or source KID)")
        }
        guard kinds.count == 1 else {
            let list = kinds.map { "\($0.key.short) (\($0.value))" }.sorted().joined(separator: ", ")
            throw KbuildError(.ambiguous, "\(prefix) matches \(kinds.count) things: \(list); give more digits")
        }
        switch kind {
        case "process":
            let record = try await reader.record(ProcessRecord.self, kid, what: "process")
            let now = try await running(app: record.app).first { $0.kid == kid }
            return try await fromProcess(ProcessLink(kid: kid, record: record, state: now?.state), subject: "process \(kid.short)")
        case "release":
            return try await fromRelease(kid, subject: "release \(kid.short)")
        default:
            var matching: Release?
            for r in releases.values where r.image == kid || r.build == kid || r.sourceRecord == kid {
                matching = r
                break
            }
            if matching == nil {
                for r in releases.values where await source(of: r) == kid {
                    matching = r
                    break
                }
            }
            let source: SourceLink? = if let s = matching?.sourceRecord { try? await sourceLink(s) } else { nil }
            return try await down(from: source, subject: "\(kind) \(kid.short)") { r in
                switch kind {
                case "image": r.image == kid
                case "build": r.build == kid
                case "source record": r.sourceRecord == kid
                default: await self.source(of: r) == kid
                }
            }
        }
    }

    // MARK: - What runs

    /// The processes of an app that run now, from every live node's report.
    public func running(app: String?) async throws -> [ProcessLink] {
        var out: [ProcessLink] = []
        let now = Date()
        for node in try await reader.nodes() {
            guard let status = node.status, node.record.isAlive(reporting: status, at: now) else { continue }
            for p in status.processes where app == nil || p.app == app {
                guard let kid = p.process, let record = try? await reader.record(ProcessRecord.self, kid, what: "process") else { continue }
                out.append(ProcessLink(kid: kid, record: record, state: p.state.rawValue))
            }
        }
        return out.sorted { ($0.record.app, $0.record.name) < ($1.record.app, $1.record.name) }
    }

    /// The process a host PID belongs to: it, or its nearest ancestor, is the
    /// sandbox of a process a node reports (by its host PID). The ancestors are
    /// the machine's the PID runs on: sent by a CLI run there, else read from
    /// this machine's /proc (nodes of `kbuild up --nodes N` share it), else the
    /// PID alone (the top process of a sandbox, as any node reports it). PIDs
    /// are per machine: one that names processes on two nodes is ambiguous
    /// until `lookup.node` says which.
    func process(pid: Int32, lookup: PIDLookup) async throws -> (ProcessLink, Int32) {
        // From the live nodes' reports: host PID → the processes with it (a record is read only for the one found).
        var byPID: [Int32: [(node: String, status: ProcessStatus)]] = [:]
        let now = Date()
        for node in try await reader.nodes() where lookup.node == nil || node.record.name == lookup.node {
            guard let status = node.status, node.record.isAlive(reporting: status, at: now) else { continue }
            for p in status.processes { if let pid = p.hostPID { byPID[pid, default: []].append((node.record.name, p)) } }
        }
        let chain = lookup.ancestors ?? ProcFS.ancestry(of: pid) ?? [pid]
        for current in chain {
            let found = byPID[current] ?? []
            if found.count > 1 {
                let named = found.map { "\($0.node) (\($0.status.app).\($0.status.name))" }.joined(separator: ", ")
                throw KbuildError(.ambiguous, "PID \(current) runs on more than one node: \(named); name one with --node NODE")
            }
            if let (_, status) = found.first, let kid = status.process {
                let record = try await reader.record(ProcessRecord.self, kid, what: "process")
                return (ProcessLink(kid: kid, record: record, state: status.state.rawValue), current)
            }
        }
        let where_ = lookup.node.map { "node \($0)" } ?? "any live node"
        if lookup.ancestors == nil, ProcFS.parent(of: pid) == nil {
            throw KbuildError(.notFound, "PID \(pid) is no process \(where_) reports, nor one on the control plane's machine (run kbuild trace PID on the node's machine, or give --node NODE)")
        }
        let name = lookup.ancestors == nil ? " (\(ProcFS.command(of: pid) ?? "?"))" : ""
        throw KbuildError(.notFound, "PID \(pid)\(name) is not a kbuild process on \(where_): kbuild did not start it, nor any process above it")
    }

    func appNames() async throws -> [String] {
        try await refs.list(prefix: Schema.apps).compactMap { ref in
            if case .app(let name) = Schema.Key(ref.name) { name } else { nil }
        }
    }
}

/// Where `kbuild trace PID` looks a PID up: on one node (nil: every live
/// node), and the PID's ancestors on the machine it runs on (the PID first),
/// as the CLI read them there (nil: this machine's /proc, when it has the PID).
public struct PIDLookup: Sendable, Equatable {
    public var node: String?
    public var ancestors: [Int32]?
    public init(node: String? = nil, ancestors: [Int32]? = nil) {
        self.node = node
        self.ancestors = ancestors
    }
}

/// What /proc says about a PID.
public enum ProcFS {
    /// The PID and its ancestors up to init (at most 64), or nil when this machine has no such process.
    public static func ancestry(of pid: Int32) -> [Int32]? {
        guard parent(of: pid) != nil else { return nil }
        var chain = [pid]
        var current = pid
        while current > 1, chain.count < 64, let up = parent(of: current) {
            chain.append(up)
            current = up
        }
        return chain
    }

    /// The parent PID (field 4 of /proc/PID/stat), nil if there is no such process.
    static func parent(of pid: Int32) -> Int32? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? Int32(fields[1]) : nil
    }

    static func command(of pid: Int32) -> String? {
        (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
