import KbuildCore
import AsyncHTTPClient
public import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import Synchronization

/// A client of etcd's v3 JSON gateway over AsyncHTTPClient: no gRPC code
/// generation (the Swift etcd clients that exist need grpc-swift 1.x).
///
/// It knows several members and sends each call to the last one that
/// answered, moving on to the next when a member cannot be reached, so the
/// loss of one member of three costs a caller one failed connection, not an
/// error. A txn is never sent again once a member may have received it (it
/// may have been applied): its caller gets an error saying so.
public struct EtcdClient: Sendable {
    /// The members' base URLs, `http://host:port`.
    public let endpoints: [String]
    let http: HTTPClient
    private let preferred = Preferred()

    final class Preferred: Sendable {
        let index = Mutex(0)
    }

    /// One HTTP client for every etcd client in the process (made once, never shut down).
    private static let shared: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(2)
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// `spec` is `etcd://host:port[,host:port…]` (or `http://…`, comma-separated).
    public init(_ spec: String) throws {
        endpoints = try EtcdClient.parse(spec)
        http = EtcdClient.shared
    }

    /// The members named by an `--state` value, as base URLs; a clear error for anything else.
    public static func parse(_ spec: String) throws -> [String] {
        var rest = Substring(spec.trimmingCharacters(in: .whitespaces))
        for scheme in ["etcd://", "http://"] where rest.hasPrefix(scheme) {
            rest = rest.dropFirst(scheme.count)
            break
        }
        if rest.hasPrefix("https://") || spec.hasPrefix("etcds://") {
            throw KbuildError(.invalidArgument, "invalid state \(spec.debugQuoted): etcd over TLS is not supported yet; use etcd://host:port")
        }
        let hosts = rest.split(separator: ",", omittingEmptySubsequences: false).map { $0.hasPrefix("http://") ? $0.dropFirst(7) : $0 }
        guard !hosts.isEmpty, !rest.isEmpty else {
            throw KbuildError(.invalidArgument, "invalid state \(spec.debugQuoted): want etcd://host:port[,host:port…]")
        }
        return try hosts.map { host in
            let h = host.hasSuffix("/") ? host.dropLast() : host
            guard let colon = h.lastIndex(of: ":"), let port = Int(h[h.index(after: colon)...]), (1...65535).contains(port),
                  !h[..<colon].isEmpty, !h.contains("/"), !h.contains("@") else {
                throw KbuildError(.invalidArgument, "invalid etcd member \(String(host).debugQuoted) in \(spec.debugQuoted): want host:port")
            }
            return "http://" + h
        }
    }

    /// The members as `etcd://a,b`, as a user gives them.
    public var spec: String { "etcd://" + endpoints.map { String($0.dropFirst(7)) }.joined(separator: ",") }

    // MARK: - Calls

    func range(_ r: EtcdWire.RangeRequest) async throws -> EtcdWire.RangeResponse {
        try await call("/v3/kv/range", r, idempotent: true)
    }

    func txn(_ t: EtcdWire.TxnRequest) async throws -> EtcdWire.TxnResponse {
        try await call("/v3/kv/txn", t)
    }

    func put(_ p: EtcdWire.PutRequest) async throws -> EtcdWire.Header? {
        struct Answer: Decodable { var header: EtcdWire.Header? }
        let a: Answer = try await call("/v3/kv/put", p)
        return a.header
    }

    /// One txn that puts every pair, unconditionally (the benchmark's ceiling); its revision.
    @discardableResult
    public func putAll(_ pairs: [(key: Data, value: Data)]) async throws -> Int64 {
        try await txn(.init(success: pairs.map { .put(.init(key: $0.key, value: $0.value)) })).header?.rev ?? 0
    }

    func status() async throws -> EtcdWire.StatusResponse {
        try await call("/v3/maintenance/status", [String: String](), timeout: .seconds(5), idempotent: true)
    }

    func compact(to revision: Int64) async throws {
        struct Answer: Decodable { var header: EtcdWire.Header? }
        let _: Answer = try await call("/v3/kv/compaction", EtcdWire.CompactionRequest(revision: .init(revision)))
    }

    /// A lease of `ttl` seconds (etcd rounds anything under 2 s up); its ID and granted TTL.
    public func grantLease(ttl: Int64) async throws -> (id: Int64, ttl: Int64) {
        let a: EtcdWire.LeaseGrantResponse = try await call("/v3/lease/grant", EtcdWire.LeaseGrantRequest(TTL: .init(ttl)))
        guard let id = a.ID?.value, id != 0 else { throw KbuildError(.io, "etcd granted no lease: \(a.error ?? "no ID in its answer")") }
        return (id, a.TTL?.value ?? ttl)
    }

    /// Renews a lease; nil when it had already expired (etcd answers 200 with no TTL).
    public func keepAlive(lease id: Int64) async throws -> Int64? {
        let a: EtcdWire.LeaseKeepAliveResponse = try await call("/v3/lease/keepalive", EtcdWire.LeaseIDRequest(ID: .init(id)), timeout: .seconds(5), idempotent: true)
        guard let ttl = a.result?.TTL?.value, ttl > 0 else { return nil }
        return ttl
    }

    public func revokeLease(_ id: Int64) async throws {
        struct Answer: Decodable { var header: EtcdWire.Header? }
        do {
            let _: Answer = try await call("/v3/lease/revoke", EtcdWire.LeaseIDRequest(ID: .init(id)))
        } catch let e as KbuildError where e.code == .notFound {
            return
        }
    }

    // MARK: - Plumbing

    /// Sends one call to the preferred member, or the next that accepts a connection.
    func call<Request: Encodable, Answer: Decodable>(_ path: String, _ body: Request, timeout: TimeAmount = .seconds(15),
                                                     idempotent: Bool = false) async throws -> Answer {
        let bytes = try JSONEncoder().encode(body)
        let (response, url) = try await open(path, bytes, timeout: timeout, idempotent: idempotent)
        let data = Data(buffer: try await response.body.collect(upTo: 256 << 20))
        return try EtcdClient.decode(Answer.self, data, status: response.status, url: url)
    }

    /// The answer to one call, its body not read yet: the watch reads it as a stream.
    /// A member that refuses the connection is skipped; one that took the
    /// request and failed is skipped only for `idempotent` calls (a read, a
    /// keepalive): a txn it may have applied is the caller's to check.
    func open(_ path: String, _ body: Data, timeout: TimeAmount, idempotent: Bool = false) async throws -> (HTTPClientResponse, String) {
        let first = preferred.index.withLock { $0 } % endpoints.count
        var failures: [String] = []
        for step in 0..<endpoints.count {
            let i = (first + step) % endpoints.count
            var request = HTTPClientRequest(url: endpoints[i] + path)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: body))
            do {
                let response = try await http.execute(request, timeout: timeout)
                if idempotent && response.status.code >= 500 && step + 1 < endpoints.count {
                    failures.append("\(endpoints[i]): \(response.status.code)")
                    continue
                }
                if step > 0 { preferred.index.withLock { $0 = i } }
                return (response, endpoints[i])
            } catch {
                try Task.checkCancellation()
                if EtcdClient.isConnectFailure(error) || (idempotent && (EtcdClient.isTimeout(error) || EtcdClient.wasCut(error))) {
                    failures.append("\(endpoints[i]): \(error)")
                    continue
                }
                if EtcdClient.isTimeout(error) || EtcdClient.wasCut(error) {
                    throw KbuildError(.io, "etcd at \(endpoints[i]) did not answer \(path) (the change may or may not have been made)")
                }
                throw KbuildError(.io, "\(endpoints[i]) is not an etcd v3 gateway: \(error)")
            }
        }
        throw KbuildError(.io, "etcd does not answer at \(spec) (\(failures.joined(separator: "; ")))")
    }

    static func isTimeout(_ error: any Error) -> Bool {
        if let e = error as? HTTPClientError, e == .deadlineExceeded || e == .readTimeout { return true }
        return false
    }

    /// A connection closed after the request may have been sent: a txn may have been applied.
    static func wasCut(_ error: any Error) -> Bool {
        (error as? HTTPClientError) == .remoteConnectionClosed
    }

    /// A refused, unroutable or timed-out connection: the request was never sent, try the next member.
    static func isConnectFailure(_ error: any Error) -> Bool {
        if let e = error as? HTTPClientError, e == .connectTimeout { return true }
        let text = String(describing: error)
        return text.contains("connectionRefused") || text.contains("Connection refused") || text.contains("connectTimeout")
            || text.contains("NIOConnectionError") || text.contains("No route to host") || text.contains("Network is unreachable")
            || text.contains("connectTimeout")
    }

    /// One gateway answer: the message, or a clear error for anything that is not etcd's.
    static func decode<Answer: Decodable>(_ type: Answer.Type, _ data: Data, status: HTTPResponseStatus, url: String) throws -> Answer {
        if status != .ok {
            if let e = try? JSONDecoder().decode(EtcdWire.ErrorBody.self, from: data), let message = e.message ?? e.error {
                // gRPC codes: 5 not found, 9/10 failed precondition/aborted, 11 out of range (compacted), 14 unavailable.
                let code: KbuildError.Code = switch e.code {
                case 5: .notFound
                case 3, 11: .invalidArgument
                case 8: .tooLarge
                default: .io
                }
                throw KbuildError(code, "etcd at \(url) refused the call: \(message)")
            }
            throw KbuildError(.io, "\(url) is not an etcd v3 gateway: it answered \(status.code) \(status.reasonPhrase) (\(EtcdClient.preview(data)))")
        }
        do {
            return try JSONDecoder().decode(Answer.self, from: data)
        } catch {
            throw KbuildError(.io, "\(url) is not an etcd v3 gateway: its answer is not etcd's JSON (\(EtcdClient.preview(data)))")
        }
    }

    static func preview(_ data: Data) -> String {
        let text = String(decoding: data.prefix(80), as: UTF8.self).map { $0.isASCII && !$0.isNewline ? $0 : "." }
        return data.isEmpty ? "an empty body" : String(text).debugQuoted
    }
}
