// Committed placements: the scheduler's write path (an assignment record kept
// with the state, then a compare-and-swap of the node's assignment ref) for
// many simulated nodes, against one store, and the same number of plain etcd
// txns of the same size (the ceiling). benchmarks/scheduler.py runs each and
// prints the table.
//
//     scheduler-bench etcd://HOST:PORT[,…] | sqlite:DIR | raw:etcd://HOST:PORT  NODES PLACEMENTS CONCURRENCY
//
// Prints one JSON line: mode, placements, seconds, placements per second, p50 and p99 commit latency (ms).
import EtcdState
import Foundation
import KbuildCore
import KbuildState
import Keg
import SQLiteState
import Synchronization

@main
struct SchedulerBench {
    static func main() async throws {
        let args = CommandLine.arguments
        guard args.count == 5, let nodes = Int(args[2]), let placements = Int(args[3]), let concurrency = Int(args[4]) else {
            FileHandle.standardError.write(Data("usage: scheduler-bench etcd://…|sqlite:DIR|raw:etcd://… NODES PLACEMENTS CONCURRENCY\n".utf8))
            exit(2)
        }
        let target = args[1]
        let commit: @Sendable (Int) async throws -> Void
        if target.hasPrefix("raw:") {
            let etcd = try EtcdClient(String(target.dropFirst(4)))
            let raw = RawTxns(etcd: etcd)
            commit = { i in try await raw.commit(i, node: i % nodes) }
        } else {
            let refs: any RefStore
            let records: any RecordContent
            if target.hasPrefix("sqlite:") {
                let dir = DataDir(root: URL(fileURLWithPath: String(target.dropFirst(7))))
                try dir.create()
                refs = try SQLiteRefStore(path: dir.refStore.path)
                records = try Keg(dataDir: dir)
            } else {
                let etcd = try EtcdClient(target)
                refs = EtcdRefStore(etcd: etcd, keys: EtcdKeys(root: "bench-\(UUID().uuidString.prefix(8))/"))
                records = StateRecords(replica: EtcdRecords(etcd: etcd))
            }
            commit = { i in
                let node = i % nodes
                let kid = try await Records.put(Placement.assignment(node: node, placement: i), in: records)
                let ref = try Schema.assignment("n\(node)")
                // As the scheduler does: read what is there, swap it for the next assignment.
                let current = try await refs.get(ref)
                try await refs.compareAndSwap(ref, to: kid, expecting: current.map { .value($0.kid) } ?? .absent, actor: "scheduler")
            }
        }
        let stats = Stats()
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask { try await stats.work(placements: placements, commit: commit) }
            }
            try await group.waitForAll()
        }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let sorted = stats.latencies.withLock { $0 }.sorted()
        func pct(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let mode = target.hasPrefix("raw:") ? "raw etcd txns" : target.hasPrefix("sqlite:") ? "sqlite" : "etcd"
        print(String(format: "{\"mode\":\"%@\",\"placements\":%d,\"seconds\":%.2f,\"rate\":%.0f,\"p50_ms\":%.2f,\"p99_ms\":%.2f}",
                     mode, placements, seconds, Double(placements) / seconds, pct(0.5), pct(0.99)))
    }
}

/// The placements handed out and how long each took to commit.
final class Stats: Sendable {
    let latencies = Mutex<[Double]>([])
    let next = Atomic<Int>(0)

    func work(placements: Int, commit: @Sendable (Int) async throws -> Void) async throws {
        while true {
            let i = next.add(1, ordering: .relaxed).oldValue
            guard i < placements else { return }
            let t = ContinuousClock.now
            try await commit(i)
            let d = ContinuousClock.now - t
            let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
            latencies.withLock { $0.append(ms) }
        }
    }
}

/// An assignment of the size a node with 30 processes has, different for each placement.
enum Placement {
    static func assignment(node: Int, placement: Int) -> Assignment {
        let processes = (0..<30).map { k in
            AssignedProcess(index: k + 1,
                            spec: ProcessSpec(app: "app\(placement % 997)", type: "web", image: KID(hashing: Array("i\(k)".utf8)),
                                              config: KID(hashing: Array("c\(k)".utf8)), command: "./serve.sh", memory: 512 << 20, cpus: 0.5,
                                              health: nil, generation: 0),
                            release: KID(hashing: Array("r\(placement)".utf8)), version: 1, assignedAt: Date(timeIntervalSince1970: 1_800_000_000))
        }
        return Assignment(node: "n\(node)", processes: processes)
    }
}

/// Records kept in the state only (no local Keg: a control plane's disk write is not what is measured).
struct StateRecords: RecordContent {
    let replica: EtcdRecords
    func putRecordBytes(_ bytes: [UInt8]) async throws -> KID {
        let kid = KID(hashing: bytes)
        try await replica.putRecord(kid, bytes)
        return kid
    }
    func recordBytes(_ kid: KID, limit: Int) async throws -> [UInt8] {
        guard let bytes = try await replica.record(kid) else { throw KbuildError(.notFound, "no record \(kid)") }
        return bytes
    }
    func putLog(path: String) async throws -> KID { throw KbuildError(.invalidArgument, "no logs here") }
}

/// The ceiling: per placement, one unconditional txn carrying the same bytes as a placement's writes (the
/// record, the ref, its sequence, its change and the head), with no read before it.
struct RawTxns {
    let etcd: EtcdClient
    let root = "raw-\(UUID().uuidString.prefix(8))/"

    func commit(_ i: Int, node: Int) async throws {
        let record = try Records.encode(Placement.assignment(node: node, placement: i))
        let kid = KID(hashing: record)
        let ref = Data("{\"kid\":\"\(kid)\",\"version\":\(i / 5000 + 1)}".utf8)
        let change = Data("{\"actor\":\"scheduler\",\"new\":\"\(kid)\",\"old\":\"\(kid)\",\"time\":1800000000.5,\"version\":\(i / 5000 + 1)}".utf8)
        let name = "nodes/n\(node)/assignment"
        try await etcd.putAll([
            (Data((root + "record/\(kid)").utf8), Data(record)),
            (Data((root + "ref/" + name).utf8), ref),
            (Data((root + "seq/" + name).utf8), Data("{\"seq\":\(i / 5000 + 1),\"version\":\(i / 5000 + 1)}".utf8)),
            (Data((root + "log/" + name + "#\(String(i, radix: 16))").utf8), change),
            (Data((root + "head").utf8), Data()),
        ])
    }
}
