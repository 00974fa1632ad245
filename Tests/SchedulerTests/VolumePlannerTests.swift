import Foundation
import KbuildCore
import KbuildState
import Scheduler
import XCTest

/// Volumes in the planner, as tables: a process that mounts one runs on its
/// node only, is replaced stop-then-start, and is never started elsewhere.
extension PlannerTests {
    func volume(_ name: String = "data", node: String = "n2", state: VolumeRecord.State = .active) -> VolumeRecord {
        VolumeRecord(id: "py-\(name)-0011aabb", app: "py", name: name, node: node, size: 1 << 30, state: state, createdBy: "test", createdAt: t0)
    }

    func mounted(_ r: (KID, Release), _ v: VolumeRecord, types: [String]? = nil) -> (KID, Release) {
        var release = r.1
        release.mounts = [VolumeMount(volume: v.name, id: v.id, node: v.node, path: "/data", types: types)]
        return (KID(hashing: Data("\(r.0) mounts \(v.id) \(types ?? [])".utf8)), release)
    }

    func testAVolumesProcessesRunOnItsNodeOnly() {
        let v = volume()
        let (kid, r) = mounted(release(1, image: image1, web: 2, worker: 1), v, types: ["web"])
        let plan = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)],
                                nodes: [node("n1"), node("n2"), node("n3")], volumes: [v], now: t0)
        XCTAssertEqual(plan.assignments["n2"]?.processes.filter { $0.spec.type == "web" }.count, 2, "both web processes on the volume's node")
        XCTAssertEqual(all(plan).filter { $0.spec.type == "web" && $0.spec.pinnedNode != "n2" }, [])
        XCTAssertEqual(plan.assignments["n2"]?.volumes, [AssignedVolume(id: v.id, app: "py", name: "data", size: 1 << 30, make: true)])
        XCTAssertNil(plan.assignments["n1"]?.volumes)
        // The worker does not mount it: its spec is what it was without the volume (mounting into web restarts no worker).
        let worker = all(plan).first { $0.spec.type == "worker" }!
        XCTAssertNil(worker.spec.mounts)
        XCTAssertEqual(worker.spec, ProcessSpec.of(release(1, image: image1, web: 2, worker: 1).1, type: "worker", generation: 0))
        XCTAssertEqual(plan.events, [])
    }

    func testAFormationThatDoesNotFitOnTheVolumesNodeIsUnschedulableThere() {
        let v = volume()
        let (kid, r) = mounted(release(1, image: image1, web: 3, memory: 1 << 30), v)
        // n2 holds two of them; n1 has room to spare but does not have the volume.
        let plan = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)],
                                nodes: [node("n1", memory: 16 << 30), node("n2", memory: 2 << 30)], volumes: [v], now: t0)
        XCTAssertEqual(plan.assignments["n2"]?.processes.count, 2)
        XCTAssertEqual(plan.assignments["n1"]?.processes ?? [], [])
        guard case .unschedulable(_, "web", let reason)? = plan.events.first else { return XCTFail("\(plan.events)") }
        XCTAssertTrue(reason.contains("n2"), reason)
    }

    func testALostVolumeNodesProcessesAreNotStartedElsewhere() {
        let v = volume()
        let (kid, r) = mounted(release(1, image: image1, web: 1), v)
        let first = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)], nodes: [node("n1"), node("n2")], volumes: [v], now: t0)
        let onN2 = first.assignments["n2"]!.processes
        XCTAssertEqual(onN2.count, 1)
        let now = t0.addingTimeInterval(30)
        let p = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: kid)],
                             nodes: [node("n1", heartbeat: now), node("n2", processes: onN2, states: [onN2[0].id: (.healthy, 0)], heartbeat: t0)],
                             volumes: [v], now: now)
        XCTAssertEqual(p.assignments["n1"]!.processes, [], "started empty on another node")
        XCTAssertTrue(p.events.contains(.nodeLost(node: "n2", processes: 1)))
        XCTAssertTrue(p.events.contains { e in
            if case .unschedulable("py", "web", let reason) = e { return reason.contains("n2") && reason.contains("not reporting") }
            return false
        }, "\(p.events)")
        XCTAssertEqual(p.assignments["n2"]?.volumes?.map(\.id), [v.id], "the lost node keeps its volume: it is never deleted for being silent")
    }

    func testAVolumesProcessIsReplacedStopThenStart() {
        let v = volume()
        let (kid1, r1) = mounted(release(1, image: image1, web: 1), v)
        let (kid2, r2) = mounted(release(2, image: image2, web: 1), v)
        let old = all(Planner.plan(apps: [AppState(app: "py", release: kid1, current: r1, healthy: nil)], nodes: [node("n2")], volumes: [v], now: t0))
        let healthy = Dictionary(uniqueKeysWithValues: old.map { ($0.id, (ProcessState.healthy, 0)) })
        let app = AppState(app: "py", release: kid2, current: r2, healthy: kid1)
        // The old one goes first (the default policy surges elsewhere): nothing new while it runs.
        var p = Planner.plan(apps: [app], nodes: [node("n2", processes: old, states: healthy)], volumes: [v], now: t0)
        XCTAssertEqual(all(p), [], "two processes on one volume at once")
        var n = node("n2", processes: old, states: Dictionary(uniqueKeysWithValues: old.map { ($0.id, (ProcessState.stopping, 0)) }))
        n.assignment = Assignment(node: "n2", processes: [])
        p = Planner.plan(apps: [app], nodes: [n], volumes: [v], now: t0)
        XCTAssertEqual(all(p), [])
        // Gone: the new one starts, on the volume's node.
        p = Planner.plan(apps: [app], nodes: [node("n1"), node("n2")], volumes: [v], now: t0)
        XCTAssertEqual(p.assignments["n2"]?.processes.map(\.spec.image), [image2])
    }

    func testADrainedVolumeNodeKeepsWhatRunsThere() {
        let v = volume()
        let (kid, r) = mounted(release(1, image: image1, web: 1), v)
        let old = all(Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)], nodes: [node("n2")], volumes: [v], now: t0))
        var n2 = node("n2", processes: old, states: [old[0].id: (.healthy, 0)])
        n2.draining = true
        let p = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: kid)], nodes: [node("n1"), n2], volumes: [v], now: t0)
        XCTAssertEqual(p.assignments["n2"]?.processes.map(\.id), old.map(\.id), "a drain stops the only process that has the data")
        XCTAssertEqual(p.assignments["n1"]?.processes ?? [], [])
        XCTAssertTrue(p.events.contains { if case .unschedulable(_, _, let reason) = $0 { return reason.contains("drained") } else { return false } }, "\(p.events)")
    }

    func testADestroyedVolumeIsDeletedByItsNodeThenForgotten() {
        let v = volume(state: .destroying)
        let (kid, r) = release(1, image: image1, web: 1)
        var p = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)], nodes: [node("n2")], volumes: [v], now: t0)
        XCTAssertEqual(p.assignments["n2"]?.volumes, [AssignedVolume(id: v.id, app: "py", name: "data", size: 1 << 30, remove: true)])
        XCTAssertEqual(p.events, [])
        var n2 = node("n2")
        n2.status?.volumes = [VolumeStatus(id: v.id, state: .removed, size: v.size)]
        p = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)], nodes: [n2], volumes: [v], now: t0)
        XCTAssertNil(p.assignments["n2"]?.volumes)
        XCTAssertEqual(p.events, [.volumeRemoved(app: "py", name: "data", id: v.id)])
        // A release that still mounts a volume being destroyed (a revert) starts nothing on it.
        let (kid2, r2) = mounted(release(2, image: image1, web: 1), volume(state: .destroying))
        p = Planner.plan(apps: [AppState(app: "py", release: kid2, current: r2, healthy: nil)], nodes: [node("n2")], volumes: [volume(state: .destroying)], now: t0)
        XCTAssertEqual(all(p), [])
        XCTAssertTrue(p.events.contains { if case .unschedulable(_, _, let reason) = $0 { return reason.contains("being destroyed") } else { return false } })
    }

    /// A volume is made once: when its node says it is ready the scheduler notes it, and from then on the
    /// node is never told to make it (a missing disk is reported, not replaced by an empty one).
    func testAVolumeIsMadeOnlyUntilItsNodeMadeIt() {
        var v = volume()
        let (kid, r) = release(1, image: image1, web: 1)
        var n2 = node("n2")
        n2.status?.volumes = [VolumeStatus(id: v.id, state: .ready, size: v.size, used: 0)]
        var p = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)], nodes: [n2], volumes: [v], now: t0)
        XCTAssertEqual(p.events, [.volumeMade(app: "py", name: "data", id: v.id)])
        XCTAssertEqual(p.assignments["n2"]?.volumes?.first?.make, true)
        v.madeAt = t0
        p = Planner.plan(apps: [AppState(app: "py", release: kid, current: r, healthy: nil)], nodes: [n2], volumes: [v], now: t0)
        XCTAssertEqual(p.events, [])
        XCTAssertNil(p.assignments["n2"]?.volumes?.first?.make, "made once, never again")
    }

    /// The room a pinned process needs on its volume's node is held for it while it is away (stopped for a
    /// rollout, its node rebooting): a process that can run anywhere goes elsewhere.
    func testRoomOnAVolumesNodeIsHeldForTheProcessesPinnedThere() {
        let v = volume()
        let (kid, r) = mounted(release(1, image: image1, web: 1, memory: 1 << 30), v)
        var other = release(1, image: image2, web: 1, memory: 1 << 30)
        other.1.app = "other"
        // n2 has the most room, but only for one: the pinned web is not placed yet (it is being replaced), the other app's web arrives.
        let p = Planner.plan(apps: [AppState(app: "other", release: other.0, current: other.1, healthy: nil),
                                    AppState(app: "py", release: kid, current: r, healthy: nil)],
                             nodes: [node("n1", memory: 1 << 30), node("n2", memory: 3 << 29)], volumes: [v], now: t0)
        XCTAssertEqual(p.assignments["n2"]?.processes.map(\.spec.app), ["py"])
        XCTAssertEqual(p.assignments["n1"]?.processes.map(\.spec.app), ["other"])
        XCTAssertEqual(p.events, [])
    }

    func testMountPathsAndNamesAreChecked() throws {
        XCTAssertEqual(try VolumeRecord.check(mountPath: "/data//pg/"), "/data/pg")
        XCTAssertEqual(try VolumeRecord.check(mountPath: "/app/storage"), "/app/storage")
        for bad in ["data", "", "/", "//", "/app", "/app/", "/proc", "/proc/x", "/dev/shm", "/sys", "/tmp/x", "/a/../b", "/a/./b"] {
            XCTAssertThrowsError(try VolumeRecord.check(mountPath: bad), bad) { e in
                XCTAssertTrue("\(e)".contains("mount path"), "\(e)")
            }
        }
        try VolumeRecord.check(name: "pg-data1")
        for bad in ["", "Data", "1data", "data-", "a_b", String(repeating: "a", count: 31)] {
            XCTAssertThrowsError(try VolumeRecord.check(name: bad), bad)
        }
    }
}
