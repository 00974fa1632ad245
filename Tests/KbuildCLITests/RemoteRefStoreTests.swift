import Foundation
import Hummingbird
import HummingbirdTesting
import KbuildAPI
import KbuildClient
import KbuildCore
import KbuildServer
import KbuildState
import Keg
import RefStoreConformance
import SQLiteState
import XCTest

/// The ref store through the API (`RemoteRefStore` → `/api/v1/state/…` →
/// SQLite) passes the same conformance suite as SQLite itself, each case on a
/// fresh store behind a real HTTP server on 127.0.0.1.
final class RemoteRefStoreTests: XCTestCase {
    static let token = "test-admin-token"

    /// Serves a fresh data dir's API while `body` runs, and hands it a client.
    func withServer(_ name: String, _ body: @Sendable @escaping (KbuildClient, SQLiteRefStore) async throws -> Void) async throws {
        let dir = try tempDir(self, name)
        let keg = try Keg(dataDir: DataDir(root: URL(fileURLWithPath: dir)))
        let refs = try SQLiteRefStore(path: dir + "/refs.sqlite")
        let api = APIRoutes<BasicRequestContext>(keg: keg, refs: refs, sandbox: nil, kbuild: "kbuild") { [] }
        let router = KbuildHTTP.router(keg: keg, refs: refs, tokens: [Self.token], api: { api.register(on: $0) })
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let port = try XCTUnwrap(client.port)
            try await body(KbuildClient(base: "http://127.0.0.1:\(port)", token: Self.token, actor: "test"), refs)
        }
    }

    func testEveryConformanceCaseThroughTheAPI() async throws {
        var failures: [String] = []
        for c in RefStoreConformance.Case.allCases {
            let failure = UnsafeBox<String?>(nil)
            try await withServer("remote-conformance") { client, _ in
                do {
                    try await RefStoreConformance.run(c, on: RemoteRefStore(client: client))
                } catch {
                    failure.value = "\(c.rawValue): \(error)"
                }
            }
            if let f = failure.value { failures.append(f) }
        }
        XCTAssertEqual(failures, [], "\(RefStoreConformance.Case.allCases.count) cases")
    }

    func testAWatchThroughTheAPIHearsAChangeAsItHappens() async throws {
        try await withServer("remote-watch") { client, local in
            var store = RemoteRefStore(client: client)
            store.pollWait = 10
            let remote = store
            let name = try RefName("apps/web/release")
            // The server holds a request with nothing to say for its wait, and answers it as soon as there is something.
            let quiet = Date()
            let none = try await remote.changes(prefix: nil, after: .zero, limit: 10, wait: 1.5)
            XCTAssertEqual(none, [])
            XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(quiet), 1.4, "the server did not hold the long poll")
            let started = Date()
            enum Outcome: Sendable { case change(RefChange), wrote, timedOut }
            let seen = try await withThrowingTaskGroup(of: Outcome.self) { group in
                group.addTask {
                    for try await change in remote.watch(prefix: try RefName("apps"), after: .zero) { return .change(change) }
                    return .timedOut
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(300))
                    try await local.compareAndSwap(name, to: KID(hashing: Array("v1".utf8)), expecting: .absent, actor: "writer")
                    return .wrote
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(20))
                    return .timedOut
                }
                var first: RefChange?
                for try await value in group {
                    if case .change(let c) = value { first = c; break }
                    if case .timedOut = value { break }
                }
                group.cancelAll()
                return first
            }
            XCTAssertEqual(seen?.name, name, "the watch heard nothing within 20 s")
            XCTAssertEqual(seen?.actor, "writer")
            // Heard through the long poll as it happened, not after its 10 s wait ran out.
            XCTAssertLessThan(Date().timeIntervalSince(started), 3)
        }
    }

    func testBadStateRequestsAreClearErrors() async throws {
        try await withServer("remote-bad") { client, _ in
            func expect(_ code: KbuildError.Code, _ message: String, _ work: () async throws -> Void) async {
                do {
                    try await work()
                    XCTFail("\(message): no error")
                } catch let e as KbuildError {
                    XCTAssertEqual(e.code, code, e.message)
                    if !message.isEmpty { XCTAssertTrue(e.message.contains(message), e.message) }
                } catch {
                    XCTFail("\(message): \(error)")
                }
            }
            let remote = RemoteRefStore(client: client)
            let raw = client
            await expect(.invalidArgument, "failed to parse ref name") { let _: Ref = try await raw.get("/state/ref?name=apps//x") }
            await expect(.invalidArgument, "missing name=REF") { let _: Ref = try await raw.get("/state/ref") }
            await expect(.invalidArgument, "invalid wait") { let _: API.Changes = try await raw.get("/state/changes?after=0&wait=3600") }
            await expect(.invalidArgument, "invalid after") { let _: API.Changes = try await raw.get("/state/changes?after=-1") }
            await expect(.invalidArgument, "invalid expectation") {
                let _: RefChange = try await raw.send(.POST, "/state/cas", ["name": "pins/x", "actor": "t", "expecting": ["kind": "maybe"]] as [String: AnyEncodable])
            }
            await expect(.invalidArgument, "not a JSON object") { let _: KID = try await raw.send(.POST, "/state/records", [1, 2]) }
            await expect(.conflict, "failed to update ref pins/x") {
                try await remote.compareAndSwap(try RefName("pins/x"), to: nil, expecting: .value(KID(hashing: [1])), actor: "t")
            }
            await expect(.invalidArgument, "invalid actor") {
                let _: RefChange = try await raw.send(.POST, "/state/cas", API.CompareAndSwap(name: try RefName("pins/x"), kid: nil, expecting: .any,
                                                                                              actor: "evil\u{1b}[2J"))
            }
            let fine = try await remote.get(try RefName("pins/x"))
            XCTAssertNil(fine, "a refused change wrote nothing")
            // A record goes in and comes back byte for byte, by its KID.
            let kid: KID = try await raw.send(.POST, "/state/records", ["kind": "test"] as [String: String])
            let back = try await raw.open(.GET, "/state/records/\(kid)", body: nil, timeout: .seconds(10))
            let bytes = Array(Data(buffer: try await back.body.collect(upTo: 1 << 20)))
            XCTAssertEqual(KID(hashing: bytes), kid)
            XCTAssertEqual(String(decoding: bytes, as: UTF8.self), #"{"kind":"test"}"#)
            await expect(.notFound, "not in the Keg") { _ = try await raw.open(.GET, "/state/records/\(KID(hashing: [9]))", body: nil, timeout: .seconds(10)) }
            // A wrong token: 401, said as such.
            let stranger = RemoteRefStore(client: try KbuildClient(base: client.base, token: "wrong", actor: "x"))
            await expect(.unauthorized, "failed to authenticate") { _ = try await stranger.currentRevision() }
        }
    }
}

/// Any encodable value, for hand-made bodies.
struct AnyEncodable: Encodable, ExpressibleByStringLiteral, ExpressibleByDictionaryLiteral {
    let encode: @Sendable (any Encoder) throws -> Void
    init(stringLiteral value: String) { encode = { var c = $0.singleValueContainer(); try c.encode(value) } }
    init(dictionaryLiteral elements: (String, String)...) {
        let dict = Dictionary(uniqueKeysWithValues: elements)
        encode = { var c = $0.singleValueContainer(); try c.encode(dict) }
    }
    func encode(to encoder: any Encoder) throws { try encode(encoder) }
}
