import Cluster
import Foundation
import KbuildCore
import Releases
import Scheduler
import XCTest
import KbuildState

/// The rollout planner and placement, as tables: (desired, observed) → steps.
final class PlannerTests: XCTestCase {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    let image1 = KID(hashing: Data("image 1".utf8))
    let image2 = KID(hashing: Data("image 2".utf8))
    let config = KID(hashing: Data("config".utf8))

    func release(_ version: Int64, image: KID, web: Int, worker: Int = 0, memory: UInt64 = 512 << 20) -> (KID, Release) {
        var formation = ["web": ProcessFormation(quantity: web, memory: memory)]
        if worker > 0 { formation["worker"] = ProcessFormation(quantity: worker, memory: memory) }
        let r = Release(app: "py", version: version, image: image, config: config,
                        processTypes: ["web": "python app.py", "worker": "python worker.py"], formation: formation,
                        description: "v\(version)", createdBy: "test", createdAt: t0)
        return (KID(hashing: Data("release \(version) \(image) \(web) \(worker) \(memory)".utf8)), r)
    }

    func node(_ name: String, memory: UInt64 = 4 << 30, cpus: Double = 4, processes: [AssignedProcess] = [],
              states: [String: (ProcessState, Int)] = [:], heartbeat: Date? = nil) -> NodeState {
        let record = NodeRecord(name: name, address: "127.0.0.1", capacity: Resources(memory: memory, cpus: cpus), network: "host", agentPID: 1, startedAt: t0)
        let status = NodeStatus(node: name, at: heartbeat ?? t0, lease: 10, processes: processes.compactMap { p in
            guard let (state, restarts) = states[p.id] else { return nil }
            return ProcessStatus(id: p.id, app: p.spec.app, type: p.spec.type, name: p.name, state: state, process: nil, hostPID: 100,
                                 port: 20000 + p.index, restarts: restarts, lastExit: restarts > 0 ? 1 : nil, since: t0)
        })
        return NodeState(record: record, status: status, assignment: Assignment(node: name, processes: processes))
    }

    func all(_ plan: Plan) -> [AssignedProcess] { plan.assignments.values.flatMap(\.processes).sorted { $0.id < $1.id } }

    func testFirstReleaseIsPlacedAndSpreadAcrossNodes() {
        let (kid, r) = release(1, image: image1, web: 3)
        let plan = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)],
                                nodes: [node("n1"), node("n2"), node("n3")], now: t0)
        XCTAssertEqual(all(plan).map(\.name), ["web.1", "web.2", "web.3"])
        XCTAssertEqual(plan.assignments.values.map(\.processes.count).sorted(), [1, 1, 1], "one replica per node")
        XCTAssertEqual(plan.events, [])
    }

    func testRollingUpdateSurgesOneWaitsForHealthThenRetires() {
        let (kid1, r1) = release(1, image: image1, web: 2)
        let (kid2, r2) = release(2, image: image2, web: 2)
        // v1 runs, healthy, both on n1.
        let v1 = Planner.plan(apps: [AppState(app: "py", release: kid1, current: r1, healthy: nil)], nodes: [node("n1")], now: t0)
        let old = all(v1)
        let healthy = Dictionary(uniqueKeysWithValues: old.map { ($0.id, (ProcessState.healthy, 0)) })
        // Step 1: v2 arrives: one new process (surge 1), nothing retired yet.
        var p = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)],
                             nodes: [node("n1", processes: old, states: healthy)], now: t0)
        var procs = all(p)
        XCTAssertEqual(procs.count, 3)
        XCTAssertEqual(procs.filter { $0.spec.image == image2 }.map(\.name), ["web.1"])
        // Step 2: still starting: no change.
        var states = healthy
        let new1 = procs.first { $0.spec.image == image2 }!
        states[new1.id] = (.starting, 0)
        p = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)],
                         nodes: [node("n1", processes: procs, states: states)], now: t0.addingTimeInterval(1))
        XCTAssertEqual(all(p).map(\.id), procs.map(\.id))
        // Step 3: healthy: one old retired; while it is still being stopped it counts against the surge.
        states[new1.id] = (.healthy, 0)
        p = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)],
                         nodes: [node("n1", processes: procs, states: states)], now: t0.addingTimeInterval(2))
        let retired = procs.filter { q in !all(p).contains { $0.id == q.id } }
        XCTAssertEqual(retired.count, 1)
        procs = all(p)
        XCTAssertEqual(procs.filter { $0.spec.image == image1 }.count, 1)
        XCTAssertEqual(procs.filter { $0.spec.image == image2 }.count, 1)
        // Step 3b: the retired one is gone from the node: the second new one starts.
        states[retired[0].id] = nil
        p = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)],
                         nodes: [node("n1", processes: procs, states: states)], now: t0.addingTimeInterval(2.5))
        procs = all(p)
        XCTAssertEqual(procs.filter { $0.spec.image == image2 }.count, 2)
        // Step 4: both new healthy: the last old one goes, and the release converged.
        for q in procs where q.spec.image == image2 { states[q.id] = (.healthy, 0) }
        p = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)],
                         nodes: [node("n1", processes: procs, states: states)], now: t0.addingTimeInterval(3))
        XCTAssertEqual(all(p).map { $0.spec.image }, [image2, image2])
        XCTAssertEqual(p.events, [.converged(app: "py", release: kid2)])
    }

    func testStopThenStartStartsNothingUntilTheOldAreGone() {
        let (kid1, r1) = release(1, image: image1, web: 2)
        let (kid2, r2) = release(2, image: image2, web: 2)
        let policy = RolloutPolicy(maxSurge: 0, maxUnavailable: 2)
        let old = all(Planner.plan(apps: [AppState(app: "py", release: kid1, current: r1, healthy: nil)], nodes: [node("n1")], now: t0))
        let healthy = Dictionary(uniqueKeysWithValues: old.map { ($0.id, (ProcessState.healthy, 0)) })
        // Both retired at once, nothing new yet: they still run.
        var p = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)],
                             nodes: [node("n1", processes: old, states: healthy)], now: t0, policy: policy)
        XCTAssertEqual(all(p), [])
        // Reported stopping, unassigned: still nothing.
        let stopping = Dictionary(uniqueKeysWithValues: old.map { ($0.id, (ProcessState.stopping, 0)) })
        var n = node("n1", processes: old, states: stopping)
        n.assignment = Assignment(node: "n1", processes: [])
        p = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)], nodes: [n], now: t0, policy: policy)
        XCTAssertEqual(all(p), [])
        // Gone: both new ones start.
        p = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)],
                         nodes: [node("n1")], now: t0, policy: policy)
        XCTAssertEqual(all(p).map(\.spec.image), [image2, image2])
    }

    func testScaleOnlyRestartsNothing() {
        let (kid1, r1) = release(1, image: image1, web: 1)
        let (kid2, r2) = release(2, image: image1, web: 3)
        let first = all(Planner.plan(apps: [AppState(app: "py", release: kid1, current: r1, healthy: nil)], nodes: [node("n1")], now: t0))
        let p = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)],
                             nodes: [node("n1", processes: first, states: [first[0].id: (.healthy, 0)])], now: t0)
        XCTAssertEqual(all(p).count, 3)
        XCTAssertTrue(all(p).contains(first[0]), "the running web.1 is kept as it is")
        // And back down to 1: the highest numbers go.
        let (kid3, r3) = release(3, image: image1, web: 1)
        let down = Planner.plan(apps: [AppState(app: "py", release: kid3, current: r3, healthy: kid2)],
                                nodes: [node("n1", processes: all(p), states: Dictionary(uniqueKeysWithValues: all(p).map { ($0.id, (ProcessState.healthy, 0)) }))], now: t0)
        XCTAssertEqual(all(down).map(\.name), ["web.1"])
    }

    func testCrashLoopRevertsAndFirstReleaseFailureIsReported() {
        let (kid1, r1) = release(1, image: image1, web: 1)
        let (kid2, r2) = release(2, image: image2, web: 1)
        let old = all(Planner.plan(apps: [AppState(app: "py", release: kid1, current: r1, healthy: nil)], nodes: [node("n1")], now: t0))
        let surge = all(Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)],
                                     nodes: [node("n1", processes: old, states: [old[0].id: (.healthy, 0)])], now: t0))
        let new = surge.first { $0.spec.image == image2 }!
        let p = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)],
                             nodes: [node("n1", processes: surge, states: [old[0].id: (.healthy, 0), new.id: (.backoff, 3)])], now: t0)
        XCTAssertEqual(p.events, [.revert(app: "py", failed: kid2, to: kid1, reason: "web.1 crashed 3 times, last exit status 1")])
        XCTAssertTrue(all(p).contains(old[0]), "the old release keeps serving")
        // No healthy release to go back to: reported as failed.
        let f = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: nil)],
                             nodes: [node("n1", processes: [new], states: [new.id: (.backoff, 5)])], now: t0)
        XCTAssertEqual(f.events.count, 1)
        guard case .failed(_, _, let reason) = f.events[0] else { return XCTFail("\(f.events)") }
        XCTAssertTrue(reason.contains("crashed 5 times"))
        // Never healthy within the start timeout: also a failure.
        let slow = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: kid1)],
                                nodes: [node("n1", processes: surge, states: [old[0].id: (.healthy, 0), new.id: (.unhealthy, 0)], heartbeat: t0.addingTimeInterval(61))],
                                now: t0.addingTimeInterval(61))
        XCTAssertEqual(slow.events, [.revert(app: "py", failed: kid2, to: kid1, reason: "web.1 was not healthy within 60 s")])
    }

    func testRevertToWhatRunsRestartsNothing() {
        let (kid1, r1) = release(1, image: image1, web: 1)
        let old = all(Planner.plan(apps: [AppState(app: "py", release: kid1, current: r1, healthy: nil)], nodes: [node("n1")], now: t0))
        // v3 = revert to v1: same image and config, another release KID.
        let (kid3, r3) = release(3, image: image1, web: 1)
        let failed = AssignedProcess(index: 1, spec: ProcessSpec.of(release(2, image: image2, web: 1).1, type: "web", generation: 0)!,
                                     release: KID(hashing: Data("v2".utf8)), version: 2, assignedAt: t0)
        let p = Planner.plan(apps: [AppState(app: "py", release: kid3, current: r3, healthy: kid1)],
                             nodes: [node("n1", processes: old + [failed], states: [old[0].id: (.healthy, 0), failed.id: (.backoff, 4)])], now: t0)
        XCTAssertEqual(all(p), old, "v1's process serves on, v2's goes")
    }

    func testPlacementRespectsCapacityAndSaysWhy() {
        let (kid, r) = release(1, image: image1, web: 3, memory: 1 << 30)
        let p = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)],
                             nodes: [node("n1", memory: 2 << 30)], now: t0)
        XCTAssertEqual(all(p).count, 2)
        XCTAssertEqual(p.events, [.unschedulable(app: "py", type: "web", reason: "a process needs 1G and 0.5 CPU, and the most any node has free is 0M and 3 CPU (n1)")])
        XCTAssertNil(Placement.choose(Resources(memory: 1, cpus: 5), among: [.init(node: "a", free: Resources(memory: 10, cpus: 4), siblings: 0)]))
        XCTAssertEqual(Placement.choose(Resources(memory: 1, cpus: 1), among: [
            .init(node: "a", free: Resources(memory: 10, cpus: 4), siblings: 1),
            .init(node: "b", free: Resources(memory: 5, cpus: 4), siblings: 0),
        ]), "b", "spread beats free memory")
    }

    func testLostNodeProcessesArePlacedElsewhere() {
        let (kid, r) = release(1, image: image1, web: 2)
        let first = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)], nodes: [node("n1"), node("n2")], now: t0)
        let onN1 = first.assignments["n1"]!.processes, onN2 = first.assignments["n2"]!.processes
        XCTAssertEqual(onN1.count, 1)
        let now = t0.addingTimeInterval(30)
        let p = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: kid)],
                             nodes: [node("n1", processes: onN1, states: [onN1[0].id: (.healthy, 0)], heartbeat: now),
                                     node("n2", processes: onN2, states: [onN2[0].id: (.healthy, 0)], heartbeat: t0)], now: now)
        XCTAssertEqual(p.assignments["n2"]!.processes, [], "the dead node is told to run nothing")
        XCTAssertEqual(p.assignments["n1"]!.processes.map(\.name), ["web.1", "web.2"])
        XCTAssertEqual(p.events, [.nodeLost(node: "n2", processes: 1)])
        // A scheduler that just started waits a lease before calling a silent node lost.
        let fresh = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: kid)],
                                 nodes: [node("n1", processes: onN1, states: [onN1[0].id: (.healthy, 0)], heartbeat: now),
                                         node("n2", processes: onN2, states: [onN2[0].id: (.healthy, 0)], heartbeat: t0)], now: now, trustSilence: false)
        XCTAssertEqual(fresh.assignments["n2"]!.processes, onN2)
        XCTAssertEqual(fresh.events, [])
    }

    /// A drained node: its process is replaced elsewhere as a rollout replaces one (the new one healthy first,
    /// then the old one retired), and nothing new is placed there, also with room to spare.
    func testDrainedNodesProcessesMoveHealthyFirstAndNothingNewGoesThere() {
        let (kid, r) = release(1, image: image1, web: 2)
        let first = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)], nodes: [node("n1"), node("n2"), node("n3")], now: t0)
        let byNode = first.assignments.mapValues(\.processes)
        let healthy = Dictionary(uniqueKeysWithValues: all(first).map { ($0.id, (ProcessState.healthy, 0)) })
        let app = AppState(app: "py", release: kid, current: r, healthy: kid)
        func nodes(_ placed: [String: [AssignedProcess]], states: [String: (ProcessState, Int)], drained: String) -> [NodeState] {
            ["n1", "n2", "n3"].map { name in
                var n = node(name, processes: placed[name] ?? [], states: states)
                n.draining = name == drained
                return n
            }
        }
        let onN1 = byNode["n1"] ?? []
        XCTAssertEqual(onN1.count, 1, "\(byNode)")
        // Step 1: n1 drained: a replacement starts on n3 (the node without one), n1's keeps running.
        var step = Planner.plan(apps: [app], nodes: nodes(byNode, states: healthy, drained: "n1"), now: t0)
        XCTAssertEqual(step.assignments["n1"]?.processes.map(\.id), onN1.map(\.id), "the old one runs until its replacement is healthy")
        let replacement = step.assignments["n3"]?.processes ?? []
        XCTAssertEqual(replacement.count, 1)
        XCTAssertFalse(replacement.contains { r in onN1.contains { $0.id == r.id } }, "the replacement has an id of its own")
        XCTAssertEqual(step.events, [])
        // Step 2: the replacement is healthy: n1's process is retired.
        var states = healthy
        for p in replacement { states[p.id] = (.healthy, 0) }
        step = Planner.plan(apps: [app], nodes: nodes(step.assignments.mapValues(\.processes), states: states, drained: "n1"), now: t0)
        XCTAssertEqual(step.assignments["n1"]?.processes ?? [], [])
        XCTAssertEqual(all(step).count, 2)
        // Scaling up while n1 is drained: nothing goes to n1.
        let (kid3, r3) = release(2, image: image1, web: 6, memory: 256 << 20)
        step = Planner.plan(apps: [AppState(app: "py", release: kid3, current: r3, healthy: kid)],
                            nodes: nodes(step.assignments.mapValues(\.processes), states: states, drained: "n1"), now: t0)
        XCTAssertEqual(step.assignments["n1"]?.processes ?? [], [], "placed on a drained node")
        XCTAssertGreaterThan(all(step).count, 2)
    }

    /// What a node says about another node's process does not count: only the node it is assigned to reports it.
    func testOnlyTheAssignedNodesReportCounts() {
        let (kid, r) = release(1, image: image1, web: 1)
        let first = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)], nodes: [node("n1")], now: t0)
        let p = all(first)[0]
        // n1 says it is healthy; n2 (assigned nothing) claims it crash-loops: no revert, converged.
        let honest = node("n1", processes: [p], states: [p.id: (.healthy, 0)])
        var liar = node("n2")
        liar.status = NodeStatus(node: "n2", at: t0, lease: 10, processes: [
            ProcessStatus(id: p.id, app: "py", type: "web", name: p.name, state: .backoff, process: nil, hostPID: 1, port: 1,
                          restarts: 50, lastExit: 1, since: t0),
        ])
        for order in [[liar, honest], [honest, liar]] {
            let plan = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)], nodes: order, now: t0 + 1)
            XCTAssertEqual(plan.events, [.converged(app: "py", release: kid)], "\(order.map(\.record.name))")
        }
    }

    func testFormationChangeParsing() throws {
        XCTAssertEqual(try FormationChange(parsing: "web=3"), FormationChange(type: "web", quantity: 3))
        XCTAssertEqual(try FormationChange(parsing: "worker=2:1G:1.5"), FormationChange(type: "worker", quantity: 2, memory: 1 << 30, cpus: 1.5))
        for bad in ["web", "web=-1", "web=101", "web=x", "=3", "w b=1", "web=1:1K", "web=1:1G:0", "web=1:1G:1:2"] {
            XCTAssertThrowsError(try FormationChange(parsing: bad), bad)
        }
        XCTAssertThrowsError(try ConfigVars().applying(set: ["1BAD": "x"], unset: []))
        XCTAssertThrowsError(try ConfigVars().applying(set: ["PORT": "1"], unset: []))
        XCTAssertThrowsError(try ConfigVars().applying(set: [:], unset: ["MISSING"]))
        XCTAssertEqual(try ConfigVars.parseAssignments(["A=b=c", "EMPTY="]), ["A": "b=c", "EMPTY": ""])
        XCTAssertThrowsError(try ConfigVars.parseAssignments(["NOEQUALS"]))
        XCTAssertEqual(try AppJSON.healthchecks(Array(#"{"healthchecks":{"web":[{"path":"/up","timeout":3,"attempts":5}]}}"#.utf8)),
                       ["web": HealthCheck(path: "/up", timeout: 3, initialDelay: 0, attempts: 5)])
        XCTAssertThrowsError(try AppJSON.healthchecks(Array(#"{"healthchecks":{"web":[{"path":"up"}]}}"#.utf8)))
        for (bad, message) in [("not json", "not JSON"), (#"{"healthchecks":{"web":[{"attempts":"five"}]}}"#, "healthchecks.web[0].attempts must be a number"),
                               (#"{"healthchecks":{"web":[{"timeout":true}]}}"#, "healthchecks.web[0].timeout must be a number"),
                               (#"{"healthchecks":[]}"#, "healthchecks must be an object"), (#"[1]"#, "the top level must be an object"),
                               (#"{"healthchecks":{"web":{"path":"/"}}}"#, "healthchecks.web must be a list"),
                               (#"{"healthchecks":{"web":[{"attempts":0}]}}"#, "attempts must be a number from 1.0 to 1000.0")] {
            XCTAssertThrowsError(try AppJSON.healthchecks(Array(bad.utf8)), bad) { error in
                XCTAssertTrue("\(error)".contains(message), "\(bad): \(error)")
            }
        }
        // Keys kbuild does not read (Heroku's scripts, env, addons, formation) are left alone.
        XCTAssertEqual(try AppJSON.healthchecks(Array(#"{"name":"x","scripts":{"postdeploy":"true"},"env":{"A":{"value":"b"}},"addons":["heroku-postgresql"]}"#.utf8)), [:])
    }
}
