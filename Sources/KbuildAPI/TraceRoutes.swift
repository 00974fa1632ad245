import Hummingbird
import Foundation
import HTTPTypes
import KbuildCore
import KbuildServer
import KbuildState
import Trace

/// `kbuild trace` through the API: the same `Tracer` the control plane's CLI
/// uses, on its data dir (a PID is looked up in this machine's /proc, where
/// its nodes' processes run). Admin only: a PID, a KID or a commit may name
/// any tenant's process, so an app token gets 403 (the token check's rules).
extension APIRoutes {
    func registerTrace(on router: Router<Context>) {
        let p = API.prefix + "/trace"
        router.get(RouterPath(p)) { r, _ in
            try await self.answer { try await self.viewing(r).tracer.trace(try self.traceTarget(r, diff: false), lookup: try self.pidLookup(r)) }
        }
        router.get("\(p)/diff") { r, _ in
            try await self.answer { () -> ReleaseDiff in
                guard case .releaseRange(let app, let from, let to) = try self.traceTarget(r, diff: true) else {
                    throw KbuildError(.invalidArgument, "a diff needs APP@vN..vM")
                }
                return try await self.tracer.diff(app: app, from: from, to: to)
            }
        }
        router.get("\(p)/file") { r, _ in
            do {
                guard let path = r.uri.queryParameters.get("path"), !path.isEmpty else { throw KbuildError(.invalidArgument, "missing path=FILE") }
                let result = try await self.tracer.trace(try self.traceTarget(r, diff: false), lookup: try self.pidLookup(r))
                guard let source = result.up.source else { throw KbuildError(.notFound, "\(result.subject) has no pushed source to read \(path) from") }
                let bytes = try self.tracer.file(path, in: source.source, commit: source.commit)
                var headers = HTTPFields()
                headers[.contentType] = "application/octet-stream"
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
            } catch {
                return ErrorBody.response(KbuildError.wrap(error))
            }
        }
    }

    var tracer: Tracer { Tracer(reader: reader, keg: keg, requestLog: keg.dataDir.router.path) }

    /// `node=NAME` and `ancestors=PID,PID,…` (the PID first, as the CLI on the PID's machine read them).
    func pidLookup(_ r: Request) throws -> PIDLookup {
        let q = r.uri.queryParameters
        let node = q.get("node").flatMap { $0.isEmpty ? nil : $0 }
        if let node, !Names.isAppName(node) { throw KbuildError(.invalidArgument, "invalid node name \(node.debugQuoted)") }
        var ancestors: [Int32]?
        if let text = q.get("ancestors"), !text.isEmpty {
            let parts = text.split(separator: ",")
            let pids = parts.compactMap { Int32($0) }
            guard parts.count <= 64, pids.count == parts.count, pids.allSatisfy({ $0 > 0 }) else {
                throw KbuildError(.invalidArgument, "invalid ancestors \(text.debugQuoted): at most 64 PIDs, comma-separated")
            }
            ancestors = pids
        }
        if let first = ancestors?.first, let target = q.get("target"), Int32(target) != first {
            throw KbuildError(.invalidArgument, "ancestors must start with the PID traced, \(target)")
        }
        return PIDLookup(node: node, ancestors: ancestors)
    }

    func traceTarget(_ r: Request, diff: Bool) throws -> TraceTarget {
        guard let text = r.uri.queryParameters.get("target"), !text.isEmpty else { throw KbuildError(.invalidArgument, "missing target=WHAT") }
        let target = try TraceTarget(parsing: text)
        if case .releaseRange = target, !diff { throw KbuildError(.invalidArgument, "\(text) is a range of releases: ask /trace/diff") }
        return target
    }
}
