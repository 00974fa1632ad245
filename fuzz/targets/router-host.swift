// fuzz-modules: Router
// A request's Host header → RouteTable.lookup (HostName.parse, then apps and domains).
@testable import Router

let web = Endpoint(host: "127.0.0.1", port: 5001, process: "shop.web.1")
let apps: [String: [Endpoint]] = ["shop": [web], "blog": [], "a-1": [web], "x": [web]]
let domains = ["Shop.Example.COM": "shop", "blog.example.com": "blog", "gone.example.com": "gone", "xn--bcher-kva.example": "x"]
let tables: [RouteTable] = {
    let local = RouteTable()
    local.update(apps: apps, domains: domains)
    let custom = RouteTable(suffix: "Apps.Example.NET.")
    custom.update(apps: apps, domains: domains)
    return [local, custom]
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let host = fuzzText(start, count)
    let name = HostName.parse(host)
    if let name {
        // A bare, lowercase host name: no port, no trailing dot, only DNS characters.
        require(!name.isEmpty && name.utf8.count <= 253, "name of \(name.utf8.count) bytes from \(host.debugDescription)")
        require(name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x2e || $0 == 0x5f },
                "name \(name.debugDescription) from \(host.debugDescription)")
        // Only one trailing dot is dropped ("a.." → "a."), which then routes nowhere: a 404, not a 400.
        require(name.hasSuffix(".") || HostName.parse(name) == name, "parsing \(name.debugDescription) again changes it")
    }
    for table in tables {
        let route = table.lookup(host: host)
        switch route {
        case .badHost(let raw):
            require(raw == host, "badHost carries \(raw.debugDescription), not the header")
        case .app(let app, let endpoints):
            require(name != nil, "routed an unparsable host \(host.debugDescription)")
            require(!endpoints.isEmpty && apps[app] == endpoints, "routed to \(app) with \(endpoints)")
            require(name == "\(app).\(table.suffix)" || domains.contains { $0.key.lowercased() == name && $0.value == app },
                    "\(host.debugDescription) routed to \(app)")
        case .noHealthyProcess(let app):
            require(name != nil, "noHealthyProcess for an unparsable host")
            require(apps[app]?.isEmpty ?? true, "\(app) has endpoints, yet noHealthyProcess")
        case .unknownApp(let unknown):
            require(unknown == name, "unknownApp(\(unknown.debugDescription)) for \(String(describing: name))")
        }
        // Host names are case-insensitive (ASCII; other bytes are refused anyway).
        if host.utf8.allSatisfy({ $0 < 0x80 }) {
            let upper = table.lookup(host: host.uppercased())
            switch (route, upper) {
            case (.badHost, .badHost): break
            default: require(route == upper, "\(host.debugDescription) → \(route), uppercased → \(upper)")
            }
        }
    }
    return 0
}
