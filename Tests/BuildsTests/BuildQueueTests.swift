import Builds
import Foundation
import KbuildCore
import Keg
import KbuildState
import SQLiteState
import XCTest

/// The build queue on a real SQLite ref store: a build is claimed by one
/// worker at a time, and a claim whose lease ran out passes to the next.
final class BuildQueueTests: XCTestCase {
    func makeQueue(lease: TimeInterval) throws -> BuildQueue {
        let dir = NSTemporaryDirectory() + "kbuild-queue-\(UUID().uuidString.prefix(8))"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        let data = DataDir(root: URL(fileURLWithPath: dir))
        try data.create()
        return BuildQueue(keg: try Keg(dataDir: data), refs: try SQLiteRefStore(path: data.refStore.path), lease: lease)
    }

    func job(_ n: Int) -> BuildJob {
        let inputs = BuildInputs(source: KID(hashing: Array("source \(n)".utf8)), stackName: "busybox", stack: KID(hashing: Array("stack".utf8)),
                                 buildpacks: [Buildpack(name: "procfile", tree: KID(hashing: Array("bp".utf8)))], detect: true)
        return BuildJob(inputs: inputs, app: "web", limits: BuildLimits(), requestedBy: "test")
    }

    func testOneClaimAtATimeAndADeadWorkersClaimPassesOn() async throws {
        let queue = try makeQueue(lease: 0.5)
        let build = try await queue.enqueue(job(1), actor: "a")
        let again = try await queue.enqueue(job(1), actor: "b")
        XCTAssertEqual(again, build, "the same inputs queue once")
        try await queue.enqueue(job(2), actor: "b")
        let pending = try await queue.pending().map(\.build)
        XCTAssertEqual(pending.sorted(), [build, job(2).inputs.kid].sorted())

        // Eight workers race for it: exactly one wins.
        let wins = try await withThrowingTaskGroup(of: KID?.self) { group in
            for w in 0..<8 { group.addTask { try await queue.claim(build, worker: "w\(w)") } }
            var n = 0
            for try await claim in group where claim != nil { n += 1 }
            return n
        }
        XCTAssertEqual(wins, 1)
        let current = try await queue.claim(of: build)
        let holder = try XCTUnwrap(current)
        let late = try await queue.claim(build, worker: "late")
        XCTAssertNil(late, "a live claim holds")

        // Renewing keeps it; then the holder stops renewing (it died): the next worker takes over.
        let renewed = try await queue.renew(build, claim: holder.kid, worker: holder.claim.worker)
        try await Task.sleep(for: .milliseconds(300))
        let stillHeld = try await queue.claim(build, worker: "late")
        XCTAssertNil(stillHeld, "renewed within its lease")
        try await Task.sleep(for: .milliseconds(400))
        let next = try await queue.claim(build, worker: "next")
        let taken = try XCTUnwrap(next)
        do {
            _ = try await queue.renew(build, claim: renewed, worker: holder.claim.worker)
            XCTFail("the dead worker's claim is gone")
        } catch let error as KbuildError {
            XCTAssertEqual(error.code, .conflict)
        }

        // Finishing records the result, takes it off the queue and drops the claim.
        let now = Date()
        let record = BuildRecord(build: build, inputs: job(1).inputs, app: "web", status: .succeeded, error: nil, log: nil, layer: nil, used: [],
                                 processTypes: ["web": "./serve.sh"], configVars: [:], worker: "next", startedAt: now, finishedAt: now, links: [])
        try await queue.finish(build, claim: taken, record: record, worker: "next")
        let result = try await queue.result(build)
        XCTAssertEqual(result?.processTypes, ["web": "./serve.sh"])
        let left = try await queue.pending().map(\.build)
        XCTAssertEqual(left, [job(2).inputs.kid])
        let claimAfter = try await queue.claim(of: build)
        XCTAssertNil(claimAfter)
    }

    func testTheBuildKIDIsTheInputsAndOnlyThem() {
        var a = job(1).inputs
        let b = job(1).inputs
        XCTAssertEqual(a.kid, b.kid)
        a.environment = ["DEBUG": "1"]
        XCTAssertNotEqual(a.kid, b.kid, "the build environment is an input")
        var c = b
        c.network = "host"
        XCTAssertNotEqual(c.kid, b.kid, "so is the network")
        var j = job(1)
        j.app = "other"
        j.requestedBy = "someone else"
        XCTAssertEqual(j.inputs.kid, b.kid, "who asked and for which app are not")
    }
}
