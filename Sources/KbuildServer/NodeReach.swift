public import HTTPTypes
public import KbuildCore
public import Keg
public import KbuildState
import Foundation
import Synchronization
import NIOPosix

/// What a node's join token may do: pure functions of the node, its
/// assignment and the request, so the rules are read (and tested) in one place.
///
/// A node reads its own registration, assignment and report, and the
/// release-phase ref of each app it has a task for; it writes its own
/// registration and report, the process list of each app it runs, and the
/// release-phase ref of each app it has a task for. It reads the records its
/// assignment names (releases, config, source records) and the objects of
/// the images it runs. Nothing else: not another node's assignment, not
/// another app's config, not the API's verbs.
public enum NodeScope {
    /// The routes a join token may call at all (each handler then checks the ref, record or object).
    public static func allows(method: HTTPRequest.Method, path: String) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if parts.count == 3, parts[0] == "v1", parts[1] == "objects" { return method == .get || method == .head }
        // Its processes' logs (the handler checks the node is its own).
        if parts.count == 6, parts[0] == "api", parts[1] == "v1", parts[2] == "nodes", parts[4] == "logs" { return method == .put }
        guard parts.count >= 4, parts[0] == "api", parts[1] == "v1", parts[2] == "state" else { return false }
        let rest = parts.dropFirst(3).joined(separator: "/")
        switch method {
        case .get: return ["revision", "ref", "changes"].contains(rest) || (parts.count == 5 && parts[3] == "records")
        case .post: return ["cas", "records", "logs"].contains(rest)
        default: return false
        }
    }

    /// Whether `node` may read ref `name`, given its assignment.
    public static func mayRead(_ name: RefName, node: String, assignment: Assignment?) -> Bool {
        switch Schema.Key(name) {
        case .node(let n), .status(let n), .assignment(let n): return n == node
        case .appField(let app, .releasePhase): return taskApps(assignment).contains(app)
        default: return false
        }
    }

    /// Whether `node` may change ref `name`, given its assignment.
    public static func mayWrite(_ name: RefName, node: String, assignment: Assignment?) -> Bool {
        switch Schema.Key(name) {
        case .node(let n), .status(let n): return n == node
        case .appField(let app, .processes): return processApps(assignment).contains(app) || taskApps(assignment).contains(app)
        case .appField(let app, .releasePhase): return taskApps(assignment).contains(app)
        default: return false
        }
    }

    /// A watch may follow the node's own refs only.
    public static func mayWatch(prefix: RefName?, node: String) -> Bool {
        guard let prefix, let own = try? Schema.node(node) else { return false }
        return prefix == own || prefix.rawValue.hasPrefix(own.rawValue + "/")
    }

    /// The records the assignment names directly (each release's own links are added by `NodeReach`).
    public static func namedRecords(_ assignment: Assignment) -> Set<KID> {
        var kids = Set<KID>()
        for p in assignment.processes { kids.formUnion([p.release, p.spec.config]) }
        for t in assignment.tasks ?? [] { kids.formUnion([t.release, t.config]) }
        return kids
    }

    /// The images the node runs.
    public static func images(_ assignment: Assignment) -> Set<KID> {
        Set(assignment.processes.map(\.spec.image) + (assignment.tasks ?? []).map(\.image))
    }

    static func processApps(_ a: Assignment?) -> Set<String> { Set(a?.processes.map(\.spec.app) ?? []) }
    static func taskApps(_ a: Assignment?) -> Set<String> { Set(a?.tasks?.map(\.app) ?? []) }
}

/// The effects behind `NodeScope`: reads a node's current assignment and
/// works out the records and objects it reaches. The reach of an assignment
/// is kept until the assignment changes, and an image's objects (the trees
/// of its layers, walked once) until 64 images are kept.
public final class NodeReach: Sendable {
    let keg: Keg
    let refs: any RefStore

    /// What one assignment reaches.
    public struct Reach: Sendable {
        public var assignment: Assignment?
        public var records: Set<KID>
        public var objects: Set<KID>
    }

    private let byNode = Mutex<[String: (assignment: KID?, reach: Reach)]>([:])
    private let byImage = Mutex<[KID: Set<KID>]>([:])
    /// Bytes each node or worker stored through the API (records, logs, objects) in the current hour: one
    /// ledger for the process, so the object routes and the state routes count against the same limit.
    private static let stored = Mutex<[String: (hour: Int, bytes: Int)]>([:])
    /// What a node may store through the API in an hour: its report every 2 s is about 300 bytes a process, so
    /// this is room for a node of 3,000 processes, with release output besides.
    public static let bytesPerHour = 2 << 30

    public init(keg: Keg, refs: any RefStore) {
        self.keg = keg
        self.refs = refs
    }

    /// What a build worker may store in an hour: app layers, caches and dependency layers of every build it runs.
    public static let workerBytesPerHour = 64 << 30

    /// Counts `bytes` a node stores (a record, a release phase's output), refusing past `bytesPerHour`:
    /// a node's token cannot fill the control plane's disk.
    public func charge(_ node: String, bytes: Int) throws {
        try charge(who: "node \(node)", bytes: bytes, limit: Self.bytesPerHour)
    }

    /// Counts `bytes` a build worker stores (objects, records), refusing past `workerBytesPerHour`.
    public func charge(worker: String, bytes: Int) throws {
        try charge(who: "build worker \(worker)", bytes: bytes, limit: Self.workerBytesPerHour)
    }

    func charge(who: String, bytes: Int, limit: Int) throws {
        let hour = Int(Date().timeIntervalSince1970 / 3600)
        let ok = Self.stored.withLock { s in
            var entry: (hour: Int, bytes: Int) = s[who].flatMap { $0.hour == hour ? $0 : nil } ?? (hour, 0)
            guard entry.bytes + bytes <= limit else { return false }
            entry.bytes += bytes
            s[who] = entry
            return true
        }
        guard ok else {
            throw KbuildError(.tooLarge, "\(who) stored \(limit >> 20) MiB through the API this hour, its limit; try again next hour")
        }
    }

    /// What `node` reaches now.
    public func reach(_ node: String) async throws -> Reach {
        let ref = try await refs.get(try Schema.assignment(node))
        if let hit = byNode.withLock({ $0[node] }), hit.assignment == ref?.kid { return hit.reach }
        var reach = Reach(assignment: nil, records: [], objects: [])
        var complete = true
        if let ref {
            let assignment = try await Records.get(Assignment.self, ref.kid, from: keg, what: "assignment")
            reach.assignment = assignment
            reach.records = NodeScope.namedRecords(assignment).union([ref.kid])
            for release in assignment.processes.map(\.release) + (assignment.tasks ?? []).map(\.release) {
                guard let r = try? await Records.get(Release.self, release, from: keg, what: "release") else {
                    complete = false  // not kept: asked again next time
                    continue
                }
                reach.records.formUnion([r.config, r.sourceRecord].compactMap { $0 })
            }
            for image in NodeScope.images(assignment) {
                // Reading trees is blocking disk I/O: off the cooperative threads.
                reach.objects.formUnion(try await NIOThreadPool.singleton.runIfActive { try self.objects(of: image) })
            }
        }
        if complete { byNode.withLock { $0[node] = (ref?.kid, reach) } }
        return reach
    }

    /// Whether `node` may read record `kid`: one its assignment names, or one
    /// a ref it may read names now (its release-phase record, its own report).
    public func mayReadRecord(_ kid: KID, node: String) async throws -> Bool {
        let reach = try await reach(node)
        if reach.records.contains(kid) { return true }
        var own = [try Schema.node(node), try Schema.status(node)]
        for app in NodeScope.taskApps(reach.assignment) { own.append(try Schema.releasePhase(app)) }
        for name in own where try await refs.get(name)?.kid == kid { return true }
        return false
    }

    /// The objects of an image: its manifest and config, and every tree and file of its layers.
    func objects(of image: KID) throws -> Set<KID> {
        if let hit = byImage.withLock({ $0[image] }) { return hit }
        var kids: Set<KID> = [image]
        let manifest = try JSONDecoder().decode(Manifest.self, from: Data(try keg.logicalBytes(image, maxWhole: 4 << 20)))
        kids.insert(try manifest.config.kid())
        var trees = try manifest.layers.compactMap { try $0.annotations?[treeAnnotation].map { try KID(parsing: $0) } }
        while let tree = trees.popLast() {
            guard kids.insert(tree).inserted else { continue }
            for entry in try keg.tree(tree).entries {
                guard let child = entry.kid else { continue }
                if entry.type == .directory { trees.append(child) } else { kids.insert(child) }
            }
        }
        byImage.withLock { cache in
            if cache.count >= 64 { cache.removeAll() }
            cache[image] = kids
        }
        return kids
    }
}
