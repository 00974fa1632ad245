import Foundation
import XCTest

/// examples/one-machine: a deployment a user writes with the start functions
/// runs a pushed app like `kbuild up` does.
final class ExampleTests: XCTestCase {
    func testTheOneMachineExampleDeploysAPush() throws {
        let example = URL(fileURLWithPath: kbuildBinary).deletingLastPathComponent().appendingPathComponent("kbuild-example-one-machine").path
        guard FileManager.default.isExecutableFile(atPath: example) else {
            return XCTFail("\(example) is not built (swift build builds every product)")
        }
        let data = try makeData("example")
        let (apiPort, routerPort) = (freePort(), freePort())
        let pid = try spawnServer(example, [data, String(apiPort), String(routerPort)], output: data + "/example.log")
        addTeardownBlock {
            kill(pid, SIGTERM)
            _ = reap(pid)
            _ = try? kbuild(["down", "--grace", "2"], dataDir: data)
        }
        try waitUntil("the example serves") { canConnect(port: apiPort) && canConnect(port: routerPort) }
        let work = try makeApp("example", data: data)
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        XCTAssertTrue(push.stderr.contains("v1 is live"), push.stderr)
        XCTAssertEqual(try kbuild(["ps:scale", "example", "web=2"], dataDir: data).status, 0)
        // Its two nodes, a and b, get one process each.
        try waitUntil("spread over a and b") {
            let p = try ps("example", data)
            return healthy(p, count: 2) && Set(p.map(\.node)) == ["a", "b"]
        }
        let served = routed(routerPort, host: "example.localhost")
        XCTAssertEqual(served.status, 200)
        XCTAssertTrue(served.body.hasPrefix("hello from example"), served.body)
    }
}
