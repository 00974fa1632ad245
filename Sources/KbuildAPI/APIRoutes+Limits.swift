import Cluster
import Foundation
import Hummingbird
import KbuildCore
import Releases
import KbuildState

/// An app's limits as the API applies them: what a formation and one-off runs hold.
extension APIRoutes {
    /// What a formation holds: every process's memory and CPUs.
    static func total(_ formation: [String: ProcessFormation]) -> Resources {
        formation.values.reduce(Resources(memory: 0, cpus: 0)) { sum, f in
            let (memory, overflow) = f.memory.multipliedReportingOverflow(by: UInt64(max(0, f.quantity)))
            return sum + Resources(memory: overflow ? .max : memory, cpus: f.cpus * Double(max(0, f.quantity)))
        }
    }

    /// An app's limits and what it uses of them.
    func limits(_ app: String) async throws -> API.Limits {
        let limits = try await AppLimits.get(app, keg: keg, refs: refs)
        let formation = try await releases.current(app).map { APIRoutes.total($0.release.formation) } ?? Resources(memory: 0, cpus: 0)
        let running = formation + oneOffs.holding(app)
        let used = API.Limits.Usage(kegBytes: try await AppUsage.kegBytes(app, keg: keg, refs: refs), memory: running.memory, cpus: running.cpus,
                                    builds: try await AppUsage.builds(app, keg: keg, refs: refs),
                                    volumeBytes: try await volumeRecords(app).reduce(0) { $0 + $1.size })
        return API.Limits(kegBytes: limits.kegBytes, memory: limits.memory, cpus: limits.cpus, builds: limits.builds,
                          volumeBytes: limits.volumeBytes, used: used)
    }

    /// A one-off run takes room beside the nodes' processes: it must fit in
    /// what the live nodes have free (their capacity, less what is assigned to
    /// them and what one-off runs hold). With one node (`kbuild up`) that is
    /// exactly this machine; with several it is their sum, an approximation
    /// until one-off runs are placed on nodes.
    func checkRoom(forOneOff needs: Resources) async throws {
        let nodes = try await reader.nodes().filter { $0.record.isAlive(reporting: $0.status, at: Date()) }
        guard !nodes.isEmpty else { return }
        let capacity = nodes.reduce(Resources(memory: 0, cpus: 0)) { $0 + $1.record.capacity }
        let assigned = nodes.flatMap { $0.assignment?.processes ?? [] }.reduce(Resources(memory: 0, cpus: 0)) { $0 + $1.spec.resources }
        let free = capacity - assigned - oneOffs.total()
        guard free.fits(needs) else {
            throw KbuildError(.unsatisfiable, "no room for a one-off run of \(needs.memory >> 20) MiB and \(needs.cpus) CPUs: the nodes have \(free.memory >> 20) MiB and \(String(format: "%.2f", max(0, free.cpus))) CPUs free")
        }
    }
}
