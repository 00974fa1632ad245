import NIOConcurrencyHelpers

/// What the router knows: per app, its healthy endpoints; and custom domains → app.
///
/// The table is replaced whole by `update`; each request reads one immutable
/// snapshot, so a request never sees half of an update.
public final class RouteTable: Sendable {
    private struct State {
        var snapshot: Snapshot
        var observers: [Int: @Sendable (Snapshot) -> Void] = [:]
        var nextObserver = 0
    }

    /// `APP.<suffix>` routes to app APP.
    public let suffix: String
    private let state: NIOLockedValueBox<State>

    public init(suffix: String = "localhost") {
        let suffix = Self.normalized(suffix)
        self.suffix = suffix
        self.state = NIOLockedValueBox(State(snapshot: Snapshot(suffix: suffix, apps: [:], domains: [:], settings: [:], crashed: [],
                                                                 certificates: [:], generation: 0)))
    }

    /// Replaces the whole table atomically. Domain keys may carry any case. `crashed`: apps whose web
    /// processes exited (none healthy), so their 503 says the app crashed (H10) rather than that it has none.
    /// `certificates`: host name → the certificate served for it by SNI.
    public func update(apps: [String: [Endpoint]], domains: [String: String], settings: [String: AppRouting] = [:], crashed: Set<String> = [],
                       certificates: [String: ServedCertificate] = [:]) {
        var lowered: [String: String] = [:]
        for (domain, app) in domains { lowered[Self.normalized(domain)] = app }
        let (snapshot, observers) = state.withLockedValue { state in
            state.snapshot = Snapshot(
                suffix: suffix, apps: apps, domains: lowered, settings: settings, crashed: crashed,
                certificates: Dictionary(certificates.map { (Self.normalized($0.key), $0.value) }, uniquingKeysWith: { a, _ in a }),
                generation: state.snapshot.generation + 1)
            return (state.snapshot, Array(state.observers.values))
        }
        for observer in observers { observer(snapshot) }
    }

    /// The route for a Host header value; a pure function of the current table.
    public func lookup(host: String) -> Route {
        snapshot().lookup(host: host)
    }

    func snapshot() -> Snapshot {
        state.withLockedValue { $0.snapshot }
    }

    /// Calls `observer` with the app names of each new table (what keeps per-app state may drop the rest).
    public func observeApps(_ observer: @escaping @Sendable (Set<String>) -> Void) {
        _ = addObserver { observer(Set($0.apps.keys)) }
    }

    /// Calls `observer` after every update, until the returned token is removed.
    func addObserver(_ observer: @escaping @Sendable (Snapshot) -> Void) -> Int {
        state.withLockedValue { state in
            let token = state.nextObserver
            state.nextObserver += 1
            state.observers[token] = observer
            return token
        }
    }

    func removeObserver(_ token: Int) {
        _ = state.withLockedValue { $0.observers.removeValue(forKey: token) }
    }

    private static func normalized(_ name: String) -> String {
        var name = name.lowercased()
        while name.hasSuffix(".") { name.removeLast() }
        return name
    }
}

/// One immutable version of the route table.
final class Snapshot: Sendable {
    let suffix: String
    let apps: [String: [Endpoint]]
    let domains: [String: String]
    let settings: [String: AppRouting]
    let crashed: Set<String>
    let certificates: [String: ServedCertificate]
    let generation: Int
    /// Every endpoint of every app: pooled connections to anything else are closed.
    let endpoints: Set<Endpoint>

    init(suffix: String, apps: [String: [Endpoint]], domains: [String: String], settings: [String: AppRouting], crashed: Set<String>,
         certificates: [String: ServedCertificate], generation: Int) {
        self.certificates = certificates
        self.suffix = suffix
        self.apps = apps
        self.domains = domains
        self.settings = settings
        self.crashed = crashed
        self.generation = generation
        self.endpoints = Set(apps.values.joined())
    }

    func lookup(host rawHost: String) -> Route {
        guard let name = HostName.parse(rawHost) else { return .badHost(rawHost) }
        if let app = domains[name] { return route(app: app) }
        let utf8 = name.utf8
        let suffixUTF8 = suffix.utf8
        if utf8.count > suffixUTF8.count + 1, utf8.elementsEqual(suffixUTF8, from: utf8.count - suffixUTF8.count),
            utf8[utf8.index(utf8.endIndex, offsetBy: -suffixUTF8.count - 1)] == UInt8(ascii: ".")
        {
            let label = name.utf8.prefix(utf8.count - suffixUTF8.count - 1)
            guard AppName.isValid(Substring(label)) else { return .badHost(rawHost) }
            let app = String(Substring(label))
            guard apps[app] != nil else { return .unknownApp(host: name) }
            return route(app: app)
        }
        return .unknownApp(host: name)
    }

    /// The certificate for a TLS client's SNI name, if any app serves it.
    func certificate(for serverName: String) -> ServedCertificate? {
        guard !certificates.isEmpty, let name = HostName.parse(serverName) else { return nil }
        return certificates[name]
    }

    private func route(app: String) -> Route {
        guard let endpoints = apps[app], !endpoints.isEmpty else {
            return crashed.contains(app) ? .crashed(app: app) : .noHealthyProcess(app: app)
        }
        return .app(app, endpoints)
    }
}

extension String.UTF8View {
    fileprivate func elementsEqual(_ other: String.UTF8View, from offset: Int) -> Bool {
        self[index(startIndex, offsetBy: offset)...].elementsEqual(other)
    }
}

/// Host header parsing: lowercase, without `:port` or a trailing dot.
enum HostName {
    /// The bare host name, or nil when the value is not a host[:port].
    static func parse(_ value: String) -> String? {
        var utf8 = Substring(value).utf8
        guard !utf8.isEmpty else { return nil }
        if let colon = utf8.lastIndex(of: UInt8(ascii: ":")) {
            let port = utf8[utf8.index(after: colon)...]
            guard !port.isEmpty, port.count <= 5, port.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            utf8 = utf8[..<colon]
        }
        if utf8.last == UInt8(ascii: ".") { utf8 = utf8.dropLast() }
        guard !utf8.isEmpty, utf8.count <= 253 else { return nil }
        var hasUpper = false
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"):
                continue
            case UInt8(ascii: "A")...UInt8(ascii: "Z"):
                hasUpper = true
            default:
                return nil
            }
        }
        let host = String(Substring(utf8))
        return hasUpper ? host.lowercased() : host
    }
}
