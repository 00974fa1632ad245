import Hummingbird
import HTTPTypes
import Cluster
import Foundation
import KbuildCore
import KbuildServer
import NodeAgent
import Releases
import Sandbox
import Synchronization
import KbuildState

/// `POST /api/v1/apps/APP/run`: a one-off process in the app's current image
/// and config (`kbuild run APP -- CMD`), its output streamed back as `Frame`s,
/// the last one its exit status. The process dies if the client goes away.
/// With the request in a `Kbuild-Run` header, the request body is its input
/// (`Frame.stdin`), streamed while the output comes back; with `tty`, the
/// process runs on a pseudo-terminal of its own (its controlling terminal:
/// ^C reaches its foreground job), sized by `Frame.resize`.
extension APIRoutes {
    func registerRun(on router: Router<Context>) {
        router.post("\(API.prefix)/apps/:app/run") { request, context in
            await self.oneOff(request, context) { let app = try await self.existing(context); return (app, app) }
        }
        // Beside an add-on the app owns (`pg:psql` with the owner's token): a one-off of the add-on's app.
        router.post("\(API.prefix)/apps/:app/addons/:addon/run") { request, context in
            await self.oneOff(request, context) { let addon = try await self.ownedAddon(context, to: "run commands beside it"); return (addon.name, addon.owner) }
        }
    }

    /// A one-off run in the app `resolve` names, charged to the app it names second (beside an add-on: its owner's
    /// limits), as the response streams it.
    func oneOff(_ request: Request, _ context: Context, in resolve: () async throws -> (runIn: String, chargeTo: String)) async -> Response {
            do {
                let (app, charged) = try await resolve()
                // The input streams in the body when the request is in the header.
                let interactive = request.headers[HTTPField.Name(API.Run.header)!] != nil
                let body = try interactive ? Self.runHeader(request.headers[HTTPField.Name(API.Run.header)!]!) : await self.decode(API.Run.self, request, context)
                guard !body.command.isEmpty, !body.command[0].isEmpty else { throw KbuildError(.invalidArgument, "nothing to run: give a command") }
                guard let sandbox = self.sandbox else { throw KbuildError(.unsatisfiable, "this kbuild runs no processes (no sandbox)") }
                guard let current = try await self.releases.current(app) else {
                    throw KbuildError(.notFound, "\(app) has no release to run in yet: git push first")
                }
                let id = "\(app).run.\(UInt32.random(in: 0...UInt32.max))"
                let launch = try await ProcessLaunch.prepare(release: current.kid, image: current.release.image, config: current.release.config,
                                                             app: app, name: "run.1", id: id, port: nil, reader: self.reader, images: self.keg, remote: nil)
                // One word with spaces is a shell command line, as heroku run takes it; several words are argv.
                let argv = body.command.count == 1 && body.command[0].contains(" ") ? AppCommand.shell(body.command[0]) : AppCommand.argv(body.command, missing: "no command \(body.command.first ?? "") in \(app) v\(current.version)'s image")
                let size = current.release.formation["web"] ?? ProcessFormation(quantity: 1)
                // A one-off run counts against the app's limits beside its formation, while it runs.
                let needs = Resources(memory: size.memory, cpus: size.cpus)
                let limits = try await AppLimits.get(charged, keg: self.keg, refs: self.refs)
                let formation = charged == app ? current.release.formation : try await self.releases.current(charged)?.release.formation ?? [:]
                try limits.check(use: APIRoutes.total(formation) + self.oneOffs.holding(charged) + needs, app: charged, what: "a one-off run")
                try await self.checkRoom(forOneOff: needs)
                let version = current.version
                let egress = self.egress
                var headers = HTTPFields()
                headers[.contentType] = "application/vnd.kbuild.run"
                // What the run holds (its share of the limits, its network) is taken when the
                // response starts and given back when it ends, however it ends: a client that
                // goes away before the response starts leaves nothing behind.
                return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                    let ticket = self.oneOffs.take(charged, needs)
                    defer { self.oneOffs.give(back: ticket) }
                    // A network of its own, as app processes have: the outside, never the host or other apps.
                    let held: EgressNetwork.Held?
                    do {
                        held = try await egress?.makeHeld()
                        // The app's add-ons (psql against its database), until the link is removed.
                        if let held { try await egress?.grant(held.link, current.release.reaches ?? []) }
                    } catch {
                        try await writer.write(ByteBuffer(bytes: Frame.encode(Frame.error, Array("failed to start the run: \(error)".utf8))))
                        try await writer.write(ByteBuffer(bytes: Frame.exitStatus(125)))
                        try await writer.finish(nil)
                        return
                    }
                    let link = held?.link
                    let mounts = link != nil ? EgressNetwork.hostFiles() : []
                    // Beside an add-on: its password (the owner's DATABASE_URL has it), not its server's TLS key.
                    let environment = charged == app ? launch.environment : launch.environment.filter { !$0.key.hasPrefix("KBUILD_ADDON_TLS_") }
                    let spec = SandboxSpec(command: argv, lowerDirs: launch.lowerDirs, environment: environment,
                                           workingDirectory: launch.workingDirectory, hostname: "run", mounts: mounts,
                                           network: link.map { .namespace("/run/netns/" + $0.namespace) } ?? .none,
                                           limits: SandboxLimits(memory: size.memory, pids: 4096, cpus: size.cpus, timeout: .seconds(3600)))
                    do {
                        if interactive {
                            var spec = spec
                            if body.tty == true { spec.environment["TERM"] = body.term.flatMap { Self.validTerm($0) } ?? "xterm" }
                            try await OneOffInput.stream(spec, sandbox: sandbox, tty: body.tty == true, rows: body.rows, columns: body.columns,
                                                         input: request.body, argv: argv, app: app, version: version, to: &writer)
                        } else {
                            try await self.stream(spec, sandbox: sandbox, argv: argv, app: app, version: version, to: &writer)
                        }
                    } catch {
                        if let held { await egress?.remove(held) }
                        throw error
                    }
                    if let held { await egress?.remove(held) }
                    try await writer.finish(nil)
                })
            } catch {
                return ErrorBody.response(KbuildError.wrap(error))
            }
    }

    /// The run request of an interactive run: base64 JSON, at most 64 KiB.
    static func runHeader(_ value: String) throws -> API.Run {
        guard value.utf8.count <= 64 << 10, let data = Data(base64Encoded: value) else {
            throw KbuildError(.invalidArgument, "invalid \(API.Run.header) header: not base64 of at most 64 KiB")
        }
        do {
            return try JSONDecoder().decode(API.Run.self, from: data)
        } catch {
            throw KbuildError(.invalidArgument, "invalid \(API.Run.header) header: \(error)")
        }
    }

    /// A TERM as terminals name themselves (`xterm-256color`), else none.
    static func validTerm(_ term: String) -> String? {
        term.utf8.count <= 64 && !term.isEmpty && term.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-+._".contains($0)) }) ? term : nil
    }

    /// Runs the one-off process as a child of the response and streams its
    /// frames: if writing fails (the client went away), leaving the group
    /// cancels it, and cancelling kills the sandbox.
    func stream(_ spec: SandboxSpec, sandbox: Sandbox, argv: [String], app: String, version: Int64,
                to writer: inout any ResponseBodyWriter) async throws {
        let (frames, continuation) = AsyncStream<[UInt8]>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { continuation.finish() }
                do {
                    let result = try await sandbox.run(spec) { s, bytes in
                        continuation.yield(Frame.encode(s == .stdout ? Frame.stdout : Frame.stderr, bytes))
                    }
                    continuation.yield(Frame.exitStatus(result.exitStatus))
                } catch let e as KbuildError where e.code == .notFound {
                    continuation.yield(Frame.encode(Frame.error, Array("no command \(argv[0]) in \(app) v\(version)'s image (\(e.message))".utf8)))
                    continuation.yield(Frame.exitStatus(127))
                } catch {
                    continuation.yield(Frame.encode(Frame.error, Array("\(error)".utf8)))
                    continuation.yield(Frame.exitStatus(125))
                }
            }
            for await frame in frames { try await writer.write(ByteBuffer(bytes: frame)) }
            try await group.waitForAll()
        }
    }
}

/// The resources one-off runs hold, per app, while they run (this server
/// runs them all, so the ledger is its own).
final class OneOffLedger: Sendable {
    struct Ticket: Sendable {
        let app: String
        let id: UInt64
    }
    private let held = Mutex<(next: UInt64, byApp: [String: [UInt64: Resources]])>((0, [:]))

    /// What every app's one-off runs hold.
    func total() -> Resources {
        held.withLock { $0.byApp.values.flatMap(\.values).reduce(Resources(memory: 0, cpus: 0), +) }
    }

    func holding(_ app: String) -> Resources {
        held.withLock { $0.byApp[app]?.values.reduce(Resources(memory: 0, cpus: 0), +) ?? Resources(memory: 0, cpus: 0) }
    }

    func take(_ app: String, _ resources: Resources) -> Ticket {
        held.withLock { state in
            state.next += 1
            state.byApp[app, default: [:]][state.next] = resources
            return Ticket(app: app, id: state.next)
        }
    }

    func give(back ticket: Ticket) {
        held.withLock { state in
            state.byApp[ticket.app]?[ticket.id] = nil
            if state.byApp[ticket.app]?.isEmpty == true { state.byApp[ticket.app] = nil }
        }
    }
}
