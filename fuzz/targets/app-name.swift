// fuzz-modules: KbuildCore GitGateway Router
// App and store names → Names.isAppName / isStoreName, checked against the
// rules their doc comments state, and against the other places that take an
// app name: git over SSH (GitShell.parse) and the router (APP.localhost).
import GitGateway
import KbuildCore
import Router

let web = Endpoint(host: "127.0.0.1", port: 5001, process: "web.1")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let name = fuzzText(start, count)
    let bytes = Array(name.utf8)
    let lower = { (c: UInt8) in c >= 0x61 && c <= 0x7a }
    let digit = { (c: UInt8) in c >= 0x30 && c <= 0x39 }
    // "1 to 63 of a-z, 0-9 and '-', starting with a letter, not ending with '-'."
    let appRule = (1...63).contains(bytes.count) && lower(bytes[0]) && bytes.last != 0x2d
        && bytes.allSatisfy { lower($0) || digit($0) || $0 == 0x2d }
    require(Names.isAppName(name) == appRule, "isAppName(\(name.debugQuoted)) is \(Names.isAppName(name))")
    // "1 to 64 of a-z 0-9 . _ -, starting with a letter or digit."
    let storeRule = (1...64).contains(bytes.count) && (lower(bytes[0]) || digit(bytes[0]))
        && bytes.allSatisfy { lower($0) || digit($0) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d }
    require(Names.isStoreName(name) == storeRule, "isStoreName(\(name.debugQuoted)) is \(Names.isStoreName(name))")
    guard appRule else { return 0 }
    // An app kbuild creates can be pushed to over SSH ...
    let parsed = try? GitShell.parse("git-receive-pack '\(name).git'")
    require(parsed?.app == name, "git-receive-pack '\(name).git' → \(String(describing: parsed))")
    // ... and is routed at APP.localhost.
    let table = RouteTable()
    table.update(apps: [name: [web]], domains: [:])
    let route = table.lookup(host: "\(name).localhost")
    require(route == .app(name, [web]), "app \(name.debugQuoted) (\(bytes.count) bytes) is not routed at \(name).localhost: \(route)")
    return 0
}
