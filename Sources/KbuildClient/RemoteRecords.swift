public import KbuildCore
public import KbuildState
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOFoundationCompat

/// The records of a control plane on another machine, through its API
/// (`/api/v1/state/records`): what an agent or worker that joined over the
/// network reads releases and assignments from and writes its reports to.
/// A record is named by its SHA-256, so each one read is checked against its
/// KID (a wrong or tampered answer is refused, never decoded) and a copy kept
/// locally, when `cache` is given, is as good as the original.
public struct RemoteRecords: RecordContent {
    public let client: KbuildClient
    /// Where records already read are kept (the node's own Keg), or nil.
    public let cache: (any RecordContent & RecordCache)?

    public init(client: KbuildClient, cache: (any RecordContent & RecordCache)? = nil) {
        self.client = client
        self.cache = cache
    }

    public func putRecordBytes(_ bytes: [UInt8]) async throws -> KID {
        let response = try await client.open(.POST, "/state/records", body: Data(bytes), timeout: .seconds(60))
        let body = Data(buffer: try await response.body.collect(upTo: 1 << 16))
        guard let kid = try? API.stateDecoder().decode(KID.self, from: body) else {
            throw KbuildError(.corrupt, "failed to read kbuild's answer to a record upload from \(client.base)")
        }
        guard kid == KID(hashing: bytes) else {
            throw KbuildError(.corrupt, "\(client.base) stored a record as \(kid.short), which is not its hash")
        }
        if let cache, !cache.hasRecord(kid) { _ = try? await cache.putRecordBytes(bytes) }
        return kid
    }

    /// Uploads a finished log (at most `StateRoutes.maxLog` bytes: the release phase's output is capped below it).
    public func putLog(path: String) async throws -> KID {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let response = try await client.open(.POST, "/state/logs", body: bytes, timeout: .seconds(300))
        let body = Data(buffer: try await response.body.collect(upTo: 1 << 16))
        guard let kid = try? API.stateDecoder().decode(KID.self, from: body), kid == KID(hashing: bytes) else {
            throw KbuildError(.corrupt, "\(client.base) did not store the log \(path) under its hash")
        }
        return kid
    }

    public func recordBytes(_ kid: KID, limit: Int) async throws -> [UInt8] {
        if let cache, cache.hasRecord(kid) { return try await cache.recordBytes(kid, limit: limit) }
        let response = try await client.open(.GET, "/state/records/\(kid.hex)", body: nil, timeout: .seconds(60))
        let bytes = Array(Data(buffer: try await response.body.collect(upTo: limit + 1)))
        guard bytes.count <= limit else { throw KbuildError(.tooLarge, "record \(kid.short) from \(client.base) is over \(limit) bytes") }
        guard KID(hashing: bytes) == kid else {
            throw KbuildError(.corrupt, "\(client.base) answered record \(kid.short) with bytes of another hash: refused")
        }
        if let cache { _ = try? await cache.putRecordBytes(bytes) }
        return bytes
    }
}

/// A joined node's logs go to the control plane through its API
/// (`PUT /api/v1/nodes/NODE/logs/FILE?offset=N`).
extension KbuildClient: LogSink {
    public func appendLog(node: String, file: String, offset: UInt64, bytes: [UInt8]) async throws -> LogAppend {
        let response = try await open(.PUT, "/nodes/\(segment(node))/logs/\(segment(file))?offset=\(offset)", body: Data(bytes), timeout: .seconds(60))
        let body = Data(buffer: try await response.body.collect(upTo: 1 << 16))
        do {
            return try JSONDecoder().decode(LogAppend.self, from: body)
        } catch {
            throw KbuildError(.corrupt, "failed to read kbuild's answer to a log upload from \(base): \(error)")
        }
    }
}

/// A joined worker's live build log goes to the control plane through its API
/// (`PUT /api/v1/builds/BUILD/live-log?offset=N`), where the pusher follows it.
extension KbuildClient: BuildLogSink {
    public func appendBuildLog(build: KID, offset: UInt64, bytes: [UInt8]) async throws -> LogAppend {
        let response = try await open(.PUT, "/builds/\(build.hex)/live-log?offset=\(offset)", body: Data(bytes), timeout: .seconds(60))
        let body = Data(buffer: try await response.body.collect(upTo: 1 << 16))
        do {
            return try JSONDecoder().decode(LogAppend.self, from: body)
        } catch {
            throw KbuildError(.corrupt, "failed to read kbuild's answer to a build log upload from \(base): \(error)")
        }
    }
}
