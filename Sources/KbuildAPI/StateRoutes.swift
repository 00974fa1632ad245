import Hummingbird
import Foundation
import HTTPTypes
import KbuildCore
import KbuildServer
import KbuildState

/// The state layer over HTTP (`/api/v1/state/…`): the ref store's calls and
/// the records refs name, for agents and workers on other machines
/// (`RemoteRefStore`, `RemoteRecords`). The admin reaches everything; an app
/// token gets 403 (the token check's rules); a node's join token reaches
/// only its own node's part (`NodeScope`, `NodeReach`): each ref, record and
/// change is checked against its assignment, and what it writes is written
/// as `agent NODE` whatever actor it names. A build worker's token reaches
/// the build refs only (`WorkerScope`), and writes only for the builds it
/// holds (`WorkerClaims`), as itself. Times travel as seconds since
/// 1970 with their fraction, so a change's time survives the trip exactly.
struct StateRoutes<Context: RequestContext>: Sendable {
    let refs: any RefStore
    let content: any RecordContent
    let reach: NodeReach
    /// Where node NODE's logs are on this machine: the only place a release phase's live log may name.
    let nodeLogDir: (@Sendable (String) -> String)?
    /// What a build worker's token may write (`WorkerScope`, then this).
    let workers: WorkerClaims
    /// Longest a `changes` call with `wait` holds the request open.
    static var maxWait: Double { 30 }
    /// Largest record stored through the API (an assignment of thousands of processes is well under it).
    static var maxRecord: Int { 4 << 20 }
    /// Largest log uploaded (a release phase's output, which the agent caps well below it).
    static var maxLog: Int { 64 << 20 }

    func register(on router: Router<Context>) {
        let p = API.prefix + "/state"
        router.get("\(p)/revision") { _, _ in try await answer { try await refs.currentRevision() } }
        router.get("\(p)/ref") { r, _ in
            try await answer { () -> Ref in
                let name = try self.name(r, "name")
                if let node = Self.node(r), !NodeScope.mayRead(name, node: node, assignment: try await reach.reach(node).assignment) {
                    throw KbuildError(.forbidden, "node \(node) may not read \(name)")
                }
                if let worker = Self.worker(r), !WorkerScope.mayRead(name) {
                    throw KbuildError(.forbidden, "build worker \(worker) may not read \(name)")
                }
                if let at = try self.revision(r) {
                    guard let ref = try await refs.get(name, at: at) else { throw KbuildError(.notFound, "no ref \(name) at revision \(at)") }
                    return ref
                }
                guard let ref = try await refs.get(name) else { throw KbuildError(.notFound, "no ref \(name)") }
                return ref
            }
        }
        router.get("\(p)/refs") { r, _ in
            try await answer { () -> [Ref] in
                let prefix = try self.optionalName(r, "prefix")
                if let worker = Self.worker(r), !(prefix.map(WorkerScope.mayRead) ?? false) {
                    throw KbuildError(.forbidden, "build worker \(worker) may not list \(prefix?.rawValue ?? "every ref")")
                }
                if let at = try self.revision(r) { return try await refs.list(prefix: prefix, at: at) }
                return try await refs.list(prefix: prefix)
            }
        }
        router.get("\(p)/history") { r, _ in
            try await answer { try await refs.history(try self.name(r, "name"), limit: try self.number(r, "limit", max: 1_000_000)) }
        }
        router.get("\(p)/changes") { r, _ in
            try await answer { () -> API.Changes in
                let prefix = try self.optionalName(r, "prefix")
                if let node = Self.node(r), !NodeScope.mayWatch(prefix: prefix, node: node) {
                    throw KbuildError(.forbidden, "node \(node) may follow changes under nodes/\(node) only, not \(prefix?.rawValue ?? "every ref")")
                }
                if let worker = Self.worker(r), !(prefix.map(WorkerScope.mayRead) ?? false) {
                    throw KbuildError(.forbidden, "build worker \(worker) may follow changes under builds/ only, not \(prefix?.rawValue ?? "every ref")")
                }
                let after = Revision(Int64(try self.number(r, "after", max: Int.max) ?? 0))
                let limit = try self.number(r, "limit", max: 10_000) ?? 1000
                let wait = try self.seconds(r, "wait")
                var found = try await refs.changes(prefix: prefix, after: after, limit: limit)
                if found.isEmpty, wait > 0 {
                    // A long poll: the first change under the prefix, or nothing after `wait`.
                    found = try await self.firstChange(prefix: prefix, after: after, within: wait).map { [$0] } ?? []
                }
                return API.Changes(changes: found, revision: try await refs.currentRevision())
            }
        }
        router.post("\(p)/cas") { r, c in
            try await answer { () -> RefChange in
                var body = try await self.decode(API.CompareAndSwap.self, r)
                if let node = Self.node(r) {
                    let assignment = try await reach.reach(node).assignment
                    guard NodeScope.mayWrite(body.name, node: node, assignment: assignment) else {
                        throw KbuildError(.forbidden, "node \(node) may not change \(body.name)")
                    }
                    try await self.checkNodeWrite(body.name, to: body.kid, node: node, assignment: assignment,
                                                  address: r.headers[TokenAuthMiddleware<Context>.nodeAddressHeader])
                    body.actor = "agent \(node)"
                }
                if let worker = Self.worker(r) {
                    guard WorkerScope.mayWrite(body.name) else { throw KbuildError(.forbidden, "build worker \(worker) may not change \(body.name)") }
                    if let expected = try await workers.checkWrite(body.name, to: body.kid, worker: worker) {
                        // The server's reading stands; a worker that expected something else lost a race (a conflict, as in the store).
                        let asked = try body.expecting.expectation()
                        if asked != .any && asked != expected {
                            throw KbuildError(.conflict, "\(body.name) is not what build worker \(worker) expected")
                        }
                        body.expecting = API.Expectation(expected)
                    }
                    body.actor = worker
                }
                guard !body.actor.isEmpty, body.actor.utf8.count <= 64, body.actor.first != " ", body.actor.last != " ",
                      body.actor.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._@-:/ ".contains($0)) }) else {
                    throw KbuildError(.invalidArgument, "invalid actor \(body.actor.debugQuoted): 1 to 64 of letters, digits, spaces and . _ @ - : / (no space first or last)")
                }
                let change = try await refs.compareAndSwap(body.name, to: body.kid, expecting: try body.expecting.expectation(), actor: body.actor)
                if let worker = Self.worker(r), case .buildResult(let build) = Schema.Key(body.name) { await workers.finished(build, worker: worker) }
                return change
            }
        }
        router.get("\(p)/records/:kid") { r, c in
            do {
                let kid = try KID(parsing: c.parameters.get("kid") ?? "")
                if let node = Self.node(r), !(try await reach.mayReadRecord(kid, node: node)) {
                    throw KbuildError(.forbidden, "node \(node) may not read record \(kid.short): its assignment does not name it")
                }
                let bytes = try await content.recordBytes(kid, limit: Records.maxBytes)
                var headers = HTTPFields()
                headers[.contentType] = "application/json"
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
            } catch {
                return ErrorBody.response(KbuildError.wrap(error))
            }
        }
        router.post("\(p)/records") { r, _ in
            try await answer { () -> KID in
                let bytes = try await self.body(r, max: Self.maxRecord)
                if let node = Self.node(r) { try reach.charge(node, bytes: bytes.count) }
                if let worker = Self.worker(r) { try reach.charge(worker: worker, bytes: bytes.count) }
                // Only records: JSON objects, so this is not a way to store arbitrary blobs.
                guard (try? JSONSerialization.jsonObject(with: Data(bytes))) is [String: Any] else {
                    throw KbuildError(.invalidArgument, "failed to store a record: the body is not a JSON object")
                }
                return try await content.putRecordBytes(bytes)
            }
        }
        router.post("\(p)/logs") { r, _ in
            try await answer { () -> KID in
                let bytes = try await self.body(r, max: Self.maxLog)
                if let node = Self.node(r) { try reach.charge(node, bytes: bytes.count) }
                return try await content.putRecordBytes(bytes)
            }
        }
    }

    func firstChange(prefix: RefName?, after: Revision, within seconds: Double) async throws -> RefChange? {
        try await withThrowingTaskGroup(of: RefChange?.self) { group in
            group.addTask {
                try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                return nil
            }
            group.addTask {
                for try await change in refs.watch(prefix: prefix, after: after) { return change }
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// What a node may point a ref at: a record of the ref's kind that names the
    /// node itself (and a process or release phase of its assignment), never a
    /// deletion. So a node cannot plant another node's identity, break every
    /// reader with a record of the wrong kind, make its refs name a record it
    /// may not read (and then read it), or name a file for the control plane to open.
    /// `address`: the only address the node's token lets it register; its report's process addresses must be its registered one.
    func checkNodeWrite(_ name: RefName, to kid: KID?, node: String, assignment: Assignment?, address: String?) async throws {
        guard let kid else { throw KbuildError(.forbidden, "node \(node) may not delete \(name)") }
        func record<T: Decodable>(_ type: T.Type, _ what: String) async throws -> T {
            do {
                return try await Records.get(type, kid, from: content, what: what)
            } catch {
                throw KbuildError(.invalidArgument, "node \(node) may set \(name) only to a \(what) record it stored: \((error as? KbuildError)?.message ?? "\(error)")")
            }
        }
        func refuse(_ why: String) -> KbuildError { KbuildError(.forbidden, "node \(node) may not set \(name) to \(kid.short): \(why)") }
        switch Schema.Key(name) {
        case .node:
            let r = try await record(NodeRecord.self, "node")
            guard r.name == node else { throw refuse("it names another node") }
            if let address, r.address != address { throw refuse("its token lets it register address \(address) only, not \(r.address)") }
        case .status:
            let r = try await record(NodeStatus.self, "node status")
            guard r.node == node else { throw refuse("it names another node") }
            // The router sends requests where a report says: only to the node's own registered address.
            let registered = try await refs.get(try Schema.node(node))
            let own: NodeRecord? = if let registered { try? await Records.get(NodeRecord.self, registered.kid, from: content, what: "node") } else { nil }
            for p in r.processes {
                if let a = p.address, a != own?.address { throw refuse("process \(p.name) is at \(a), not the node's address") }
                // An assigned process is reported as what it was assigned (not as another app's).
                if let a = assignment?.processes.first(where: { $0.id == p.id }), a.spec.app != p.app || a.spec.type != p.type {
                    throw refuse("process \(p.id) is \(a.spec.app)'s \(a.spec.type), not \(p.app)'s \(p.type)")
                }
            }
        case .appField(let app, .processes):
            let p = try await record(ProcessRecord.self, "process")
            guard p.app == app, p.node == node, assignment?.processes.contains(where: { $0.id == p.id }) ?? false else {
                throw refuse("it is not a process of \(app) assigned to it")
            }
        case .appField(let app, .releasePhase):
            let phase = try await record(ReleasePhaseRecord.self, "release phase")
            guard phase.app == app, phase.node == node, assignment?.tasks?.contains(where: { $0.app == app && $0.release == phase.release }) ?? false else {
                throw refuse("it is not a release phase of \(app) assigned to it")
            }
            if let live = phase.liveLog {
                // Read by the API and the pusher's hook: only a file in the node's own log directory here.
                guard let dir = nodeLogDir?(node), live.hasPrefix(dir + "/"), ShippedLogName.isValid(String(live.dropFirst(dir.count + 1))) else {
                    throw refuse("its live log \(live.debugQuoted) is not in the node's log directory")
                }
            }
        default:
            throw refuse("not a ref a node writes")
        }
    }

    // MARK: - Plumbing

    /// The node a join token acts as (set by the token check), or nil for the admin.
    static func node(_ r: Request) -> String? { r.headers[TokenAuthMiddleware<Context>.nodeHeader] }
    /// The build worker a worker token acts as, or nil.
    static func worker(_ r: Request) -> String? { r.headers[TokenAuthMiddleware<Context>.workerHeader] }

    func name(_ r: Request, _ key: String) throws -> RefName {
        guard let text = r.uri.queryParameters.get(key) else { throw KbuildError(.invalidArgument, "missing \(key)=REF") }
        return try RefName(text)
    }

    func optionalName(_ r: Request, _ key: String) throws -> RefName? {
        try r.uri.queryParameters.get(key).map { try RefName($0) }
    }

    /// `at`: a past revision to read at (the admin's only: what a node or worker reaches is decided on the present).
    func revision(_ r: Request) throws -> Revision? {
        guard let n = try number(r, "at", max: Int.max) else { return nil }
        if Self.node(r) != nil || Self.worker(r) != nil { throw KbuildError(.forbidden, "only the admin token reads refs at a past revision") }
        return Revision(Int64(n))
    }

    func number(_ r: Request, _ key: String, max: Int) throws -> Int? {
        guard let text = r.uri.queryParameters.get(key) else { return nil }
        guard let n = Int(text), n >= 0, n <= max else { throw KbuildError(.invalidArgument, "invalid \(key) \(text.debugQuoted): a number from 0 to \(max)") }
        return n
    }

    func seconds(_ r: Request, _ key: String) throws -> Double {
        guard let text = r.uri.queryParameters.get(key) else { return 0 }
        guard let s = Double(text), s >= 0, s <= Self.maxWait else {
            throw KbuildError(.invalidArgument, "invalid \(key) \(text.debugQuoted): seconds from 0 to \(Int(Self.maxWait))")
        }
        return s
    }

    func body(_ r: Request, max: Int) async throws -> [UInt8] {
        do {
            return Array(buffer: try await r.body.collect(upTo: max))
        } catch {
            throw KbuildError(.tooLarge, "failed to read the request body: it is over \(max >> 20) MiB")
        }
    }

    func decode<T: Decodable>(_ type: T.Type, _ r: Request) async throws -> T {
        let bytes = try await body(r, max: API.maxBody)
        do {
            return try API.stateDecoder().decode(type, from: Data(bytes))
        } catch {
            throw KbuildError(.invalidArgument, "failed to read the request body: \(error)")
        }
    }

    func answer(_ work: () async throws -> some Encodable) async throws -> Response {
        do {
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: Array(try API.stateEncoder().encode(try await work())))))
        } catch {
            return ErrorBody.response(KbuildError.wrap(error))
        }
    }
}
