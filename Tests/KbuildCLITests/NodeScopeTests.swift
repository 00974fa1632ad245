import Foundation
import HTTPTypes
import KbuildCore
import KbuildServer
import KbuildState
import Keg
import SQLiteState
import XCTest

/// The rules of a node's join token, as a table: what node n1 may read,
/// write and follow with an assignment that runs `web` of app `a` and the
/// release phase of app `b`.
final class NodeScopeTests: XCTestCase {
    func kid(_ n: UInt8) -> KID { KID(hashing: [n]) }

    var assignment: Assignment {
        let spec = ProcessSpec(app: "a", type: "web", image: kid(1), config: kid(2), command: "serve", memory: 1 << 28, cpus: 1, health: nil, generation: 0)
        return Assignment(node: "n1", processes: [AssignedProcess(index: 1, spec: spec, release: kid(3), version: 1, assignedAt: Date())],
                          tasks: [ReleaseTask(app: "b", release: kid(4), version: 2, image: kid(5), config: kid(6), command: "migrate",
                                              memory: 1 << 28, cpus: 1, assignedAt: Date())])
    }

    func testRefsANodeMayReadAndWrite() throws {
        let rows: [(ref: String, read: Bool, write: Bool)] = [
            ("nodes/n1", true, true), ("nodes/n1/status", true, true), ("nodes/n1/assignment", true, false),
            ("nodes/n2", false, false), ("nodes/n2/status", false, false), ("nodes/n2/assignment", false, false), ("nodes/n10/assignment", false, false),
            ("apps/a/processes", false, true), ("apps/b/processes", false, true), ("apps/c/processes", false, false),
            ("apps/b/release-phase", true, true), ("apps/a/release-phase", false, false),
            ("apps/a", false, false), ("apps/a/release", false, false), ("apps/a/config", false, false), ("apps/a/healthy", false, false),
            ("tokens/x", false, false), ("builds/queue/\(kid(9).hex)", false, false), ("pins/x", false, false), ("stacks/busybox", false, false),
        ]
        for row in rows {
            let name = try RefName(row.ref)
            XCTAssertEqual(NodeScope.mayRead(name, node: "n1", assignment: assignment), row.read, "read \(row.ref)")
            XCTAssertEqual(NodeScope.mayWrite(name, node: "n1", assignment: assignment), row.write, "write \(row.ref)")
        }
        // With no assignment: its own refs only.
        XCTAssertFalse(NodeScope.mayWrite(try RefName("apps/a/processes"), node: "n1", assignment: nil))
        XCTAssertTrue(NodeScope.mayWrite(try RefName("nodes/n1/status"), node: "n1", assignment: nil))
    }

    func testWatchesAndRoutes() throws {
        XCTAssertTrue(NodeScope.mayWatch(prefix: try RefName("nodes/n1"), node: "n1"))
        XCTAssertTrue(NodeScope.mayWatch(prefix: try RefName("nodes/n1/assignment"), node: "n1"))
        for other in ["nodes", "nodes/n10", "nodes/n2", "apps"] {
            XCTAssertFalse(NodeScope.mayWatch(prefix: try RefName(other), node: "n1"), other)
        }
        XCTAssertFalse(NodeScope.mayWatch(prefix: nil, node: "n1"))
        let routes: [(HTTPRequest.Method, String, Bool)] = [
            (.get, "/api/v1/state/revision", true), (.get, "/api/v1/state/ref", true), (.get, "/api/v1/state/changes", true),
            (.get, "/api/v1/state/records/K-1", true), (.post, "/api/v1/state/records", true), (.post, "/api/v1/state/cas", true),
            (.post, "/api/v1/state/logs", true), (.get, "/v1/objects/K-1", true), (.head, "/v1/objects/K-1", true),
            (.put, "/api/v1/nodes/n1/logs/a.web.1-x.log", true),
            (.get, "/api/v1/state/refs", false), (.get, "/api/v1/state/history", false), (.delete, "/api/v1/state/cas", false),
            (.get, "/api/v1/apps", false), (.post, "/api/v1/apps", false), (.get, "/api/v1/nodes", false), (.post, "/api/v1/nodes/n1/join-token", false),
            (.get, "/v2/a/manifests/latest", false), (.post, "/a.git/git-receive-pack", false), (.get, "/api/v1/trace", false),
            (.put, "/v1/objects/K-1", false), (.get, "/api/v1/nodes/n1/logs/a.web.1-x.log", false),
        ]
        for (method, path, allowed) in routes {
            XCTAssertEqual(NodeScope.allows(method: method, path: path), allowed, "\(method) \(path)")
        }
    }

    func testRecordsAndImagesAnAssignmentNames() {
        XCTAssertEqual(NodeScope.namedRecords(assignment), [kid(3), kid(2), kid(4), kid(6)])
        XCTAssertEqual(NodeScope.images(assignment), [kid(1), kid(5)])
    }

    func testShippedLogNames() {
        for good in ["a.web.1-3f2a.log", "my-app.worker.12-abc_def.log"] { XCTAssertTrue(ShippedLogName.isValid(good), good) }
        for bad in ["..", "../x.log", "a/b.log", ".hidden.log", "a.web.1", "A.web.log", "a b.log", String(repeating: "a", count: 300) + ".log", ""] {
            XCTAssertFalse(ShippedLogName.isValid(bad), bad)
        }
    }

    /// What a node stores through the API is counted per hour: past the limit, refused; another node is not affected.
    func testANodesBytesPerHourAreLimited() throws {
        let dir = try tempDir(self, "node-charge")
        let dataDir = DataDir(root: URL(fileURLWithPath: dir))
        try dataDir.create()
        let reach = NodeReach(keg: try Keg(dataDir: dataDir), refs: try SQLiteRefStore(path: dataDir.refStore.path))
        XCTAssertNoThrow(try reach.charge("n1", bytes: NodeReach.bytesPerHour - 10))
        XCTAssertNoThrow(try reach.charge("n1", bytes: 10))
        XCTAssertThrowsError(try reach.charge("n1", bytes: 1)) { error in
            XCTAssertEqual((error as? KbuildError)?.code, .tooLarge)
            XCTAssertTrue("\(error)".contains("node n1"), "\(error)")
        }
        XCTAssertNoThrow(try reach.charge("n2", bytes: 1))
    }
}
