public import KbuildCore
public import KbuildState
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOFoundationCompat

/// The ref store of a control plane on another machine, through its API
/// (`/api/v1/state/…`): the same `RefStore` protocol and conformance suite
/// as the SQLite store it fronts. A watch is a long poll: each fetch asks
/// for the changes after the last revision seen and waits up to `pollWait`
/// on the server for one, so a watcher hears of a change as it happens
/// without polling, and one that was cut off resumes where it was.
public struct RemoteRefStore: RefStore {
    public let client: KbuildClient
    /// How long the server holds one watch request when nothing changes.
    public var pollWait: Double = 25

    public init(client: KbuildClient) { self.client = client }

    public func get(_ name: RefName) async throws -> Ref? {
        do {
            return try await call(.GET, "/state/ref?name=\(query(name))")
        } catch let e as KbuildError where e.code == .notFound {
            return nil
        }
    }

    public func list(prefix: RefName?) async throws -> [Ref] {
        try await call(.GET, "/state/refs" + (prefix.map { "?prefix=\(query($0))" } ?? ""))
    }

    public func get(_ name: RefName, at: Revision) async throws -> Ref? {
        do {
            return try await call(.GET, "/state/ref?name=\(query(name))&at=\(at.value)")
        } catch let e as KbuildError where e.code == .notFound {
            return nil
        }
    }

    public func list(prefix: RefName?, at: Revision) async throws -> [Ref] {
        try await call(.GET, "/state/refs?at=\(at.value)" + (prefix.map { "&prefix=\(query($0))" } ?? ""))
    }

    @discardableResult
    public func compareAndSwap(_ name: RefName, to kid: KID?, expecting: RefExpectation, actor: String) async throws -> RefChange {
        try await call(.POST, "/state/cas", body: API.CompareAndSwap(name: name, kid: kid, expecting: expecting, actor: actor))
    }

    public func history(_ name: RefName, limit: Int?) async throws -> [RefChange] {
        try await call(.GET, "/state/history?name=\(query(name))" + (limit.map { "&limit=\($0)" } ?? ""))
    }

    public func changes(prefix: RefName?, after: Revision, limit: Int) async throws -> [RefChange] {
        try await changes(prefix: prefix, after: after, limit: limit, wait: 0)
    }

    /// The changes after `after`; with `wait`, the server holds the request up to that many seconds for the first one.
    public func changes(prefix: RefName?, after: Revision, limit: Int, wait: Double) async throws -> [RefChange] {
        var path = "/state/changes?after=\(after.value)&limit=\(limit)"
        if let prefix { path += "&prefix=\(query(prefix))" }
        if wait > 0 { path += "&wait=\(wait)" }
        let answer: API.Changes = try await call(.GET, path, timeout: .seconds(Int64(wait) + 30))
        return answer.changes
    }

    public func currentRevision() async throws -> Revision { try await call(.GET, "/state/revision") }

    public func watch(prefix: RefName?, after: Revision) -> RefWatch {
        let wait = pollWait
        return RefWatch(after: after, fetch: { last in
            try await self.changes(prefix: prefix, after: last, limit: 1000, wait: wait)
        }, wait: {
            // The fetch itself waited on the server; this only spaces out a server that answers at once with nothing.
            try await Task.sleep(for: .milliseconds(50))
        })
    }

    // MARK: - Plumbing

    func query(_ name: RefName) -> String {
        name.rawValue.addingPercentEncoding(withAllowedCharacters: KbuildClient.unreserved.union(CharacterSet(charactersIn: "/"))) ?? name.rawValue
    }

    func call<T: Decodable>(_ method: HTTPMethod, _ path: String, timeout: TimeAmount = .seconds(60)) async throws -> T {
        try await call(method, path, body: Optional<String>.none, timeout: timeout)
    }

    func call<T: Decodable>(_ method: HTTPMethod, _ path: String, body: (some Encodable)?, timeout: TimeAmount = .seconds(60)) async throws -> T {
        let data = try body.map { Data(try API.stateEncoder().encode($0)) }
        let response = try await client.open(method, path, body: data, timeout: timeout)
        let bytes = Data(buffer: try await response.body.collect(upTo: 64 << 20))
        do {
            return try API.stateDecoder().decode(T.self, from: bytes)
        } catch {
            throw KbuildError(.corrupt, "failed to read kbuild's answer to \(path) from \(client.base): \(error)")
        }
    }
}
