import KbuildCore
import Synchronization
public import Keg
public import KbuildState
public import Router
public import ServiceLifecycle
public import Foundation

/// Keeps the router's table in step with the cluster: each app with a
/// release, and the web processes its nodes report healthy and their
/// assignments still hold (a process a rollout retires leaves the table as
/// the scheduler drops it, before its node has stopped it or said so);
/// custom domains from `apps/APP/domains`. A node's processes leave the
/// table when the scheduler takes them from its assignment (a lost node's
/// are moved, so they go), or when it has been silent for minutes: with the
/// control plane away, nothing changes the assignments, and the router keeps
/// serving what it last knew.
///
/// With `saveTo`, each table is written to that file and read back at start,
/// so a router restarted while the control plane is away serves its last
/// table (`kbuild router --join`).
public struct RouteFeed: Service {
    let reader: ClusterReader
    let table: RouteTable
    let saveTo: String?
    /// Certificates loaded for serving, by id: each is parsed once.
    let loaded = CertificateCache()

    public init(keg: Keg, refs: any RefStore, table: RouteTable) {
        self.init(records: keg, refs: refs, table: table, saveTo: nil)
    }

    public init(records: any RecordContent, refs: any RefStore, table: RouteTable, saveTo: String?) {
        self.reader = ClusterReader(records: records, refs: refs)
        self.table = table
        self.saveTo = saveTo
    }

    /// The table as saved: apps' endpoints and custom domains.
    struct Saved: Codable, Equatable {
        struct Point: Codable, Equatable { var host: String; var port: Int; var process: String }
        var apps: [String: [Point]]
        var domains: [String: String]
        var settings: [String: RouterSettings]? = nil
    }

    public func run() async throws {
        if let saveTo, let data = FileManager.default.contents(atPath: saveTo), let saved = try? JSONDecoder().decode(Saved.self, from: data) {
            table.update(apps: saved.apps.mapValues { $0.map { Endpoint(host: $0.host, port: $0.port, process: $0.process) } }, domains: saved.domains,
                         settings: (saved.settings ?? [:]).mapValues { AppRouting(requestTimeout: $0.requestTimeout, bodyLimit: $0.bodyLimit,
                                                                                   redirectHTTPS: $0.redirectHTTPS ?? false) })
        }
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    let revision = try await reader.refs.currentRevision()
                    // A pass that fails (an unreadable record) keeps the table as it was.
                    do { try await refresh() } catch is CancellationError { return } catch {}
                    try await reader.waitForChange(after: revision, timeout: .seconds(1))
                }
            }
        } catch is CancellationError {
            // Shutting down.
        }
    }

    public func refresh(now: Date = Date()) async throws {
        var apps: [String: [Endpoint]] = [:]
        var domains: [String: String] = [:]
        var settings: [String: AppRouting] = [:]
        var certificates: [String: AppCertificates] = [:]
        for ref in try await reader.refs.list(prefix: Schema.apps) {
            guard case .appField(let app, let field) = Schema.Key(ref.name) else { continue }
            if field == .release { apps[app, default: []] = apps[app] ?? [] }
            if field == .domains {
                for d in try await reader.record(DomainsRecord.self, ref.kid, what: "domains").domains { domains[d] = app }
            }
            if field == .certs {
                certificates[app] = try await reader.record(AppCertificates.self, ref.kid, what: "certificates")
            }
            if field == .router {
                let record = try await reader.record(RouterSettings.self, ref.kid, what: "router settings")
                settings[app] = AppRouting(requestTimeout: record.requestTimeout, bodyLimit: record.bodyLimit, redirectHTTPS: record.redirectHTTPS ?? false)
            }
        }
        let nodes = try await reader.nodes()
        for (app, endpoints) in RouteFeed.endpoints(nodes: nodes, now: now) where apps[app] != nil { apps[app] = endpoints }
        let crashed = RouteFeed.crashed(nodes: nodes).filter { apps[$0]?.isEmpty ?? false }
        table.update(apps: apps, domains: domains, settings: settings, crashed: crashed,
                     certificates: loaded.serving(certificates, domains: domains, suffix: table.suffix, now: now))
        if let saveTo {
            var saved = Saved(apps: apps.mapValues { $0.map { Saved.Point(host: $0.host, port: $0.port, process: $0.process) } }, domains: domains)
            if !settings.isEmpty {
                saved.settings = settings.mapValues { RouterSettings(requestTimeout: $0.requestTimeout, bodyLimit: $0.bodyLimit, redirectHTTPS: $0.redirectHTTPS) }
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let bytes = try encoder.encode(saved)
            if FileManager.default.contents(atPath: saveTo) != bytes { try bytes.write(to: URL(fileURLWithPath: saveTo), options: .atomic) }
        }
    }

    /// How long a node may be silent before the router stops sending to it on its own: far longer than a
    /// node takes to be lost (the scheduler moves its processes first), so a control plane away for minutes
    /// does not empty the table, yet a node that died while no scheduler ran is not sent to for ever.
    public static let silentFor: TimeInterval = 300

    /// Apps with a web process that exited and waits to start again (backoff), so the router's 503 says
    /// the app crashed (H10) when none of its web processes is healthy.
    public static func crashed(nodes: [(record: NodeRecord, status: NodeStatus?, assignment: Assignment?)]) -> Set<String> {
        var out: Set<String> = []
        for (_, status, assignment) in nodes {
            let assigned = Dictionary((assignment?.processes ?? []).map { ($0.id, $0.spec) }, uniquingKeysWith: { a, _ in a })
            for p in status?.processes ?? [] where p.state == .backoff {
                if let spec = assigned[p.id], spec.type == "web" { out.insert(spec.app) }
            }
        }
        return out
    }

    /// App → its healthy web processes that their node's assignment still
    /// holds and that reported in the last `silentFor`, in a stable order.
    public static func endpoints(nodes: [(record: NodeRecord, status: NodeStatus?, assignment: Assignment?)], now: Date) -> [String: [Endpoint]] {
        var out: [String: [Endpoint]] = [:]
        for (record, status, assignment) in nodes {
            guard let status, now.timeIntervalSince(status.at) <= RouteFeed.silentFor else { continue }
            // The app and type come from the assignment, not from what the node reports.
            let assigned = Dictionary((assignment?.processes ?? []).map { ($0.id, $0.spec) }, uniquingKeysWith: { a, _ in a })
            for p in status.processes where p.state == .healthy {
                guard let spec = assigned[p.id], spec.type == "web", spec.app == p.app, let port = p.port else { continue }
                out[spec.app, default: []].append(Endpoint(host: p.address ?? record.address, port: port, process: p.id))
            }
        }
        return out.mapValues { $0.sorted { $0.process < $1.process } }
    }
}

/// The certificates the router serves, loaded once each (by id), and which host gets which.
final class CertificateCache: Sendable {
    private let loaded = Mutex<[String: ServedCertificate]>([:])

    /// Host → certificate: each app's hosts (APP.SUFFIX and its domains) get the app's valid certificate
    /// covering them that lasts longest. Only an app's own hosts: its certificates serve no one else's.
    func serving(_ byApp: [String: AppCertificates], domains: [String: String], suffix: String, now: Date) -> [String: ServedCertificate] {
        var hostsByApp: [String: [String]] = [:]
        for (domain, app) in domains { hostsByApp[app, default: []].append(domain) }
        var out: [String: ServedCertificate] = [:]
        var used: Set<String> = []
        for (app, certificates) in byApp {
            for host in ["\(app).\(suffix)"] + (hostsByApp[app] ?? []) {
                guard let best = certificates.best(for: host, at: now), let served = load(best) else { continue }
                out[host] = served
                used.insert(best.id)
            }
        }
        loaded.withLock { $0 = $0.filter { used.contains($0.key) } }
        return out
    }

    private func load(_ certificate: StoredCertificate) -> ServedCertificate? {
        if let served = loaded.withLock({ $0[certificate.id] }) { return served }
        guard let served = try? ServedCertificate(id: certificate.id, chainPEM: certificate.chainPEM, keyPEM: certificate.keyPEM) else { return nil }
        loaded.withLock { $0[certificate.id] = served }
        return served
    }
}
