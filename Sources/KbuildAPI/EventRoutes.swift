import Hummingbird
import HTTPTypes
import Foundation
import KbuildCore
import KbuildServer
import KbuildState
import ServiceLifecycle

/// `GET /api/v1/events`: the ref store's changes as server-sent events, the
/// dashboard's one stream per tab. Each event's `id` is the revision of its
/// change, so a client that reconnects with `Last-Event-ID` (or `?after=N`)
/// gets every change after it, then live ones: a sleeping tab or a dropped
/// proxy loses nothing. An app token hears only of its apps' refs and builds;
/// while nothing it may hear changes, a `progress` event every 15 s carries the
/// revision reached (as etcd's progress notifications do), so its `id` moves on.
extension APIRoutes {
    func registerEvents(on router: Router<Context>) {
        // The store's revision now (what a page read its data after; an event stream starts from it).
        router.get("\(API.prefix)/revision") { _, _ in try await self.answer { try await self.refs.currentRevision() } }
        router.get("\(API.prefix)/events") { r, _ in
            do {
                let scope = self.scope(r).map(Set.init)
                let now = try await self.refs.currentRevision()
                let given = r.headers[HTTPField.Name("Last-Event-ID")!] ?? r.uri.queryParameters.get("after")
                var start = now
                if let given {
                    guard let n = Int64(given), n >= 0, n <= now.value else {
                        throw KbuildError(.invalidArgument, "invalid event id \(given.debugQuoted): a revision from 0 to \(now.value)")
                    }
                    start = Revision(n)
                }
                var headers = HTTPFields()
                headers[.contentType] = "text/event-stream"
                headers[.cacheControl] = "no-store"
                // nginx and its kind pass the stream through unbuffered.
                headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
                let begin = start
                return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: "retry: 2000\n: live from revision \(begin.value) (now \(now.value))\n\n"))
                    let (events, feed) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingOldest(Self.eventBuffer))
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask { await self.feed(feed, after: begin, scope: scope) }
                        // Only this task writes: a client too slow for the buffer is cut off, and its reconnect replays from the store.
                        for await event in events { try await writer.write(ByteBuffer(string: event)) }
                        group.cancelAll()
                    }
                    try await writer.finish(nil)
                })
            } catch {
                return ErrorBody.response(KbuildError.wrap(error))
            }
        }
    }

    /// Events a stream may hold for a client that reads slower than changes come.
    static var eventBuffer: Int { 10_000 }

    /// Feeds each change after `start` that `scope` may see (nil: every one), then live ones, with a
    /// `progress` event after 15 quiet seconds, until the stream is cut or the server stops.
    func feed(_ feed: AsyncStream<String>.Continuation, after start: Revision, scope: Set<String>?) async {
        defer { feed.finish() }
        let last = Counter(start.value)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var apps = EventApps()
                do {
                    for try await change in self.refs.watch(prefix: nil, after: start) {
                        // The revision reached moves on only once its change is sent or left out, so a
                        // progress event can never name a revision whose change has not gone out yet.
                        if let event = try await apps.event(change, scope: scope, reader: self) {
                            guard case .enqueued = feed.yield(event) else { return }
                            last.value = change.revision.value
                            last.mark()
                        } else {
                            last.value = change.revision.value
                        }
                    }
                } catch {}
            }
            group.addTask {
                // Heartbeats: through proxies that close idle streams, and the revision reached for a filtered stream.
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    guard (try? await Task.sleep(for: .seconds(5))) != nil else { return }
                    guard last.quietFor >= .seconds(15) else { continue }
                    guard case .enqueued = feed.yield("id: \(last.value)\nevent: progress\ndata: {\"revision\":\(last.value)}\n\n") else { return }
                    last.mark()
                }
            }
            // The first to end (a watch failure, a full buffer, shutdown) ends the stream.
            await group.next()
            group.cancelAll()
        }
    }
}

/// The revision a stream has reached and when it last wrote.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: Int64
    private var written = ContinuousClock.now
    init(_ value: Int64) { _value = value }
    var value: Int64 {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
    func mark() { lock.withLock { written = .now } }
    var quietFor: Duration { lock.withLock { ContinuousClock.now - written } }
}

/// Which app each change is of: from its name (`apps/APP/…`, `volumes/APP/…`),
/// or for a build from its job's record (remembered: a build's app never changes).
struct EventApps {
    var builds: [KID: String] = [:]

    struct Payload: Encodable {
        var revision: Int64
        var ref: String
        var app: String?
        var actor: String
        var time: Date
        var deleted: Bool
    }

    /// When each app as it is now was made: an app token hears nothing of an earlier app of the same name.
    var born: [String: Revision] = [:]

    mutating func event<C>(_ change: RefChange, scope: Set<String>?, reader: APIRoutes<C>) async throws -> String? {
        let app = try await appOf(change, reader: reader)
        if let scope {
            guard let app, scope.contains(app) else { return nil }
            if born[app] == nil { born[app] = try await reader.releases.created(app) }
            guard change.revision >= born[app]! else { return nil }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        let payload = Payload(revision: change.revision.value, ref: change.name.rawValue, app: app, actor: change.actor,
                              time: change.time, deleted: change.new == nil)
        let json = String(decoding: try encoder.encode(payload), as: UTF8.self)
        return "id: \(change.revision.value)\nevent: change\ndata: \(json)\n\n"
    }

    mutating func appOf<C>(_ change: RefChange, reader: APIRoutes<C>) async throws -> String? {
        let parts = change.name.rawValue.split(separator: "/")
        if parts.count >= 2, parts[0] == "apps" || parts[0] == "volumes" { return String(parts[1]) }
        switch Schema.Key(change.name) {
        case .buildQueued(let build), .buildClaim(let build), .buildResult(let build):
            if let known = builds[build] { return known }
            let app = try? await reader.buildInfo(build)?.app
            if let app { builds[build] = app }
            return app
        default:
            return nil
        }
    }
}
