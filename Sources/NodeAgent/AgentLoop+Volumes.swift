import Foundation
import KbuildCore
import KbuildState
import Sandbox

/// The node's volumes (`VolumeDisk`, under `<state>/volumes`): made and
/// mounted as the assignment lists them, deleted only when it says `remove`
/// and no process here mounts them any more. A volume that is no longer
/// listed is left alone: data is never deleted because a record is missing.
extension AgentLoop {
    var volumeDirectory: String { stateDir + "/volumes" }

    func convergeVolumes(_ assigned: [AssignedVolume]) async {
        var next: [String: VolumeStatus] = [:]
        for v in assigned {
            let disk = VolumeDisk(directory: volumeDirectory, id: v.id)
            if v.remove == true {
                // Not while a process of this node has it, runs or waits to run again.
                if table.values.contains(where: { e in (e.assigned.spec.mounts ?? []).contains { $0.id == v.id } }) {
                    // Still mounted by a process being stopped: the next pass.
                    next[v.id] = VolumeStatus(id: v.id, state: .ready, size: v.size, used: disk.used)
                    continue
                }
                do {
                    if disk.exists || disk.isMounted {
                        try await disk.remove()
                        agent.log("agent \(config.name): deleted volume \(v.name) of \(v.app) (\(v.id))")
                    }
                    next[v.id] = VolumeStatus(id: v.id, state: .removed, size: v.size)
                } catch {
                    next[v.id] = VolumeStatus(id: v.id, state: .failed, size: v.size, error: "\(error)")
                }
                continue
            }
            // A volume that failed is tried again every 10 s, not on every pass.
            if let failed = volumes[v.id], failed.state == .failed, let last = volumeTried[v.id], ContinuousClock.now - last < .seconds(10) {
                next[v.id] = failed
                continue
            }
            volumeTried[v.id] = .now
            do {
                let made = !disk.exists
                try await disk.ensure(size: v.size, owner: agent.sandbox.ids, make: v.make == true)
                if made { agent.log("agent \(config.name): made volume \(v.name) of \(v.app) (\(v.id), \(formatMemory(v.size)))") }
                next[v.id] = VolumeStatus(id: v.id, state: .ready, size: v.size, used: disk.used)
            } catch {
                if volumes[v.id]?.error != "\(error)" { agent.log("agent \(config.name): volume \(v.id): \(error)") }
                next[v.id] = VolumeStatus(id: v.id, state: .failed, size: v.size, error: "\(error)")
            }
        }
        volumes = next
        volumeTried = volumeTried.filter { next[$0.key]?.state == .failed }
    }

    /// The bind mounts of a process's volumes; throws when one is not ready here.
    func volumeMounts(_ spec: ProcessSpec) throws -> [SandboxMount] {
        try (spec.mounts ?? []).map { m in
            guard m.node == config.name else {
                throw KbuildError(.unsatisfiable, "volume \(m.volume) is on node \(m.node), not on \(config.name)")
            }
            guard let status = volumes[m.id], status.state == .ready else {
                let why = volumes[m.id]?.error.map { ": \($0)" } ?? " (not made here yet)"
                throw KbuildError(.unsatisfiable, "volume \(m.volume) is not ready on node \(config.name)\(why)")
            }
            // Not idmapped: its root is the sandbox's root already, and what is written there stays the sandbox's ids on disk.
            return SandboxMount(source: VolumeDisk(directory: volumeDirectory, id: m.id).path, target: m.path, readOnly: false, idmap: false)
        }
    }
}
