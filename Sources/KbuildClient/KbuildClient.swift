public import AsyncHTTPClient
public import Foundation
import KbuildCore
public import KbuildState
public import NIOCore
public import NIOHTTP1
import NIOFoundationCompat
import NIOSSL

/// The one client of kbuild's API (`/api/v1`): a typed call for each user
/// verb. The CLI, and any program that drives kbuild, goes through it; it
/// needs only the API's URL and a token, never a data dir.
public struct KbuildClient: Sendable {
    /// The server, e.g. `http://10.0.0.5:7070` (no trailing slash).
    public let base: String
    public let token: String
    /// Who the server records as making a change (an admin token's claim; an app token's name wins).
    public let actor: String
    /// The HTTP client (`ClientTLS`): for an https base, one that trusts only kbuild's own CA when it is given.
    public let http: HTTPClient

    /// `caPEM`: the CA an https server's certificate must chain to (kbuild's own, pinned by its hash when a node joins).
    public init(base: String, token: String, actor: String, trusting caPEM: String? = nil) throws {
        var base = base
        while base.hasSuffix("/") { base.removeLast() }
        self.base = base
        self.token = token
        self.actor = actor
        self.http = try ClientTLS.client(trusting: caPEM)
    }

    // MARK: - Apps

    public func apps() async throws -> [API.AppInfo] { try await get("/apps") }
    public func app(_ app: String) async throws -> API.AppInfo { try await get("/apps/\(segment(app))") }
    public func createApp(_ request: API.CreateApp) async throws -> API.CreatedApp { try await send(.POST, "/apps", request) }
    /// `volumes`: its volumes go too (else a destroy of an app with volumes is refused).
    public func destroyApp(_ app: String, volumes: Bool = false) async throws {
        let _: [String: String] = try await delete("/apps/\(segment(app))?confirm=\(segment(app))" + (volumes ? "&volumes=1" : ""))
    }
    public func addons(_ app: String) async throws -> [API.AddonInfo] { try await get("/apps/\(segment(app))/addons") }
    public func addon(_ app: String, _ name: String) async throws -> API.AddonInfo { try await get("/apps/\(segment(app))/addons/\(segment(name))") }
    public func createAddon(_ app: String, _ body: API.AddonCreate) async throws -> API.AddonInfo {
        // It answers once the add-on's server is up (or after 40 s): a longer wait than other calls'.
        try await send(.POST, "/apps/\(segment(app))/addons", body, timeout: .seconds(150))
    }
    public func attachAddon(_ addon: String, to app: String, as name: String?) async throws -> API.AddonInfo {
        try await send(.POST, "/apps/\(segment(app))/attachments", API.AddonAttach(addon: addon, as: name))
    }
    public func detachAddon(_ name: String, from app: String) async throws -> API.AddonInfo {
        try await delete("/apps/\(segment(app))/attachments/\(segment(name))")
    }
    public func destroyAddon(_ name: String, app: String, force: Bool) async throws {
        let _: [String: String] = try await delete("/apps/\(segment(app))/addons/\(segment(name))?confirm=\(segment(name))" + (force ? "&force=1" : ""))
    }
    public func backups(_ app: String, addon: String) async throws -> [BackupRecord] {
        try await get("/apps/\(segment(app))/addons/\(segment(addon))/backups")
    }
    /// Dumps, stores and test-restores: as long as the database takes.
    public func captureBackup(_ app: String, addon: String) async throws -> BackupRecord {
        try await send(.POST, "/apps/\(segment(app))/addons/\(segment(addon))/backups", [String: String](), timeout: .hours(6))
    }
    public func restoreBackup(_ app: String, addon: String, backup: String) async throws -> BackupRecord {
        try await send(.POST, "/apps/\(segment(app))/addons/\(segment(addon))/backups/\(segment(backup))/restore?confirm=\(segment(addon))",
                       [String: String](), timeout: .hours(6))
    }
    public func deleteBackup(_ app: String, addon: String, backup: String) async throws -> BackupRecord {
        try await delete("/apps/\(segment(app))/addons/\(segment(addon))/backups/\(segment(backup))?confirm=\(segment(addon))")
    }
    /// Streams a dump file to be stored and test-restored as a backup.
    public func importBackup(_ app: String, addon: String, file: String) async throws -> BackupRecord {
        guard let handle = FileHandle(forReadingAtPath: file) else { throw KbuildError(.notFound, "failed to open \(file): no such file, or not readable") }
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: 0)
        let chunks = AsyncThrowingStream<ByteBuffer, any Error>(unfolding: {
            let piece = try handle.read(upToCount: 1 << 20) ?? Data()
            return piece.isEmpty ? nil : ByteBuffer(bytes: piece)
        })
        let response = try await open(.POST, "/apps/\(segment(app))/addons/\(segment(addon))/backups/import", body: nil, timeout: .hours(6),
                                      stream: .stream(chunks, length: .known(Int64(size))), contentType: "application/octet-stream")
        return try decode(Data(buffer: try await response.body.collect(upTo: 1 << 20)), path: "/backups/import")
    }
    public func setBackupSchedule(_ app: String, addon: String, _ body: API.BackupScheduleSet) async throws -> API.AddonInfo {
        try await send(.PUT, "/apps/\(segment(app))/addons/\(segment(addon))/schedule", body)
    }
    public func removeBackupSchedule(_ app: String, addon: String) async throws -> API.AddonInfo {
        try await delete("/apps/\(segment(app))/addons/\(segment(addon))/schedule")
    }
    public func rotateCredentials(_ app: String, addon: String) async throws -> API.AddonInfo {
        try await send(.POST, "/apps/\(segment(app))/addons/\(segment(addon))/credentials", [String: String](), timeout: .seconds(300))
    }
    /// New instance, dump, restore, switch: as long as the database takes.
    public func upgradeAddon(_ app: String, addon: String, version: String) async throws -> API.AddonInfo {
        try await send(.POST, "/apps/\(segment(app))/addons/\(segment(addon))/upgrade", API.AddonUpgrade(version: version), timeout: .hours(6))
    }
    /// The dump's bytes as they come.
    public func downloadBackup(_ app: String, addon: String, backup: String) async throws -> HTTPClientResponse {
        try await open(.GET, "/apps/\(segment(app))/addons/\(segment(addon))/backups/\(segment(backup))/dump", body: nil, timeout: .hours(6))
    }
    public func volumes(_ app: String) async throws -> [API.VolumeInfo] { try await get("/apps/\(segment(app))/volumes") }
    public func volume(_ app: String, _ name: String) async throws -> API.VolumeInfo { try await get("/apps/\(segment(app))/volumes/\(segment(name))") }
    public func createVolume(_ app: String, _ body: API.VolumeCreate) async throws -> API.VolumeInfo {
        try await send(.POST, "/apps/\(segment(app))/volumes", body)
    }
    public func mountVolume(_ app: String, _ name: String, _ body: API.VolumeMountRequest) async throws -> API.ReleaseInfo {
        try await send(.POST, "/apps/\(segment(app))/volumes/\(segment(name))/mount", body)
    }
    public func unmountVolume(_ app: String, _ name: String) async throws -> API.ReleaseInfo {
        try await send(.POST, "/apps/\(segment(app))/volumes/\(segment(name))/unmount", [String: String]())
    }
    /// `volumes:destroy`: ["destroyed": NAME], or ["destroying": NAME, "node": N] when its node has not deleted it yet.
    public func destroyVolume(_ app: String, _ name: String) async throws -> [String: String] {
        try await delete("/apps/\(segment(app))/volumes/\(segment(name))?confirm=\(segment(name))")
    }
    public func limits(_ app: String) async throws -> API.Limits { try await get("/apps/\(segment(app))/limits") }
    public func setLimits(_ app: String, _ limits: API.Limits) async throws -> API.Limits {
        try await send(.PUT, "/apps/\(segment(app))/limits", limits)
    }

    // MARK: - Router

    /// The app's router settings (`router:settings`); nil fields are the router's defaults.
    public func routerSettings(_ app: String) async throws -> RouterSettings { try await get("/apps/\(segment(app))/router") }
    public func setRouterSettings(_ app: String, _ settings: RouterSettings) async throws -> RouterSettings {
        try await send(.PUT, "/apps/\(segment(app))/router", settings)
    }

    /// The app's TLS certificates (what they are; never their keys).
    public func certificates(_ app: String) async throws -> [API.CertificateInfo] { try await get("/apps/\(segment(app))/certs") }
    public func addCertificate(_ app: String, chain: String, key: String) async throws -> API.CertificateInfo {
        try await send(.POST, "/apps/\(segment(app))/certs", API.CertificateUpload(chain: chain, key: key))
    }
    public func generateCertificate(_ app: String) async throws -> API.CertificateInfo {
        try await send(.POST, "/apps/\(segment(app))/certs/generate", [String: String]())
    }
    public func removeCertificate(_ app: String, _ id: String) async throws -> [API.CertificateInfo] {
        try await delete("/apps/\(segment(app))/certs/\(segment(id))")
    }

    /// The app's recent requests through the router: counts by status class and latency percentiles.
    public func routerMetrics(_ app: String) async throws -> API.RouterTraffic { try await get("/apps/\(segment(app))/metrics") }

    // MARK: - Config and releases

    public func config(_ app: String) async throws -> API.ConfigAnswer { try await get("/apps/\(segment(app))/config") }
    public func changeConfig(_ app: String, _ change: API.ConfigChange) async throws -> API.ConfigAnswer {
        try await send(.PATCH, "/apps/\(segment(app))/config", change)
    }
    public func releases(_ app: String) async throws -> [API.ReleaseInfo] { try await get("/apps/\(segment(app))/releases") }
    /// A release by its version, `vN` or `N`.
    public func release(_ app: String, version: String) async throws -> API.ReleaseInfo {
        try await get("/apps/\(segment(app))/releases/\(segment(version))")
    }
    public func releaseOutput(_ app: String, version: String) async throws -> API.ReleaseOutput {
        try await get("/apps/\(segment(app))/releases/\(segment(version))/output")
    }
    public func rollback(_ app: String, to version: Int64?) async throws -> API.ReleaseInfo {
        try await send(.POST, "/apps/\(segment(app))/releases/rollback", API.Rollback(version: version))
    }

    // MARK: - Processes

    public func processes(_ app: String) async throws -> [API.ProcessInfo] { try await get("/apps/\(segment(app))/ps") }
    /// Every app's processes on every node, with their release and commit (admin only).
    public func allProcesses() async throws -> [API.RunningProcess] { try await get("/ps") }
    public func scale(_ app: String, _ changes: [String]) async throws -> API.ReleaseInfo {
        try await send(.PATCH, "/apps/\(segment(app))/formation", API.Scale(changes: changes))
    }
    public func restart(_ app: String, type: String?) async throws -> [String: Int] {
        try await send(.POST, "/apps/\(segment(app))/ps/restart", API.Restart(type: type))
    }
    public func nodes() async throws -> [API.NodeInfo] { try await get("/nodes") }
    /// `apps:set`: the build network and/or stack of the app's next build.
    public func changeSettings(_ app: String, _ settings: API.AppSettings) async throws -> AppRecord {
        try await send(.PATCH, "/apps/\(segment(app))", settings)
    }
    /// `builds:cache:purge`.
    public func purgeBuildCache(_ app: String) async throws -> API.CachePurged {
        try await send(.POST, "/apps/\(segment(app))/build-cache/purge", [String: String]())
    }
    /// `image ls`: the app's images, newest first.
    public func images(_ app: String) async throws -> [API.ImageInfo] { try await get("/apps/\(segment(app))/images") }
    /// `logs BUILD`: a finished build's log (admin only).
    public func buildLog(_ build: String) async throws -> [UInt8] {
        let response = try await open(.GET, "/builds/\(segment(build))/log", body: nil, timeout: .seconds(300))
        return Array(Data(buffer: try await response.body.collect(upTo: 1 << 30)))
    }
    /// `logs BUILD --tail`: a queued, running or finished build's log from its start, pushed as it is written until the build ends.
    public func followBuildLog(_ build: String) async throws -> HTTPClientResponse {
        try await open(.GET, "/builds/\(segment(build))/log?follow=1", body: nil, timeout: .hours(4))
    }
    /// `tokens`, `tokens:create`, `tokens:revoke` (admin only).
    public func tokens() async throws -> [API.TokenInfo] { try await get("/tokens") }
    public func createToken(_ request: API.CreateToken) async throws -> API.CreatedToken { try await send(.POST, "/tokens", request) }
    public func revokeToken(_ name: String) async throws {
        let _: [String: String] = try await delete("/tokens/\(segment(name))")
    }

    /// `nodes:drain`: nothing new is placed on `node`, and what runs there moves.
    public func drain(node: String) async throws -> DrainRecord { try await send(.POST, "/nodes/\(segment(node))/drain", [String: String]()) }
    /// `nodes:undrain`.
    public func undrain(node: String) async throws {
        let _: [String: String] = try await delete("/nodes/\(segment(node))/drain")
    }

    /// Makes the join token of node `node` (`kbuild agent --join`).
    public func joinToken(node: String, address: String? = nil) async throws -> API.JoinToken {
        try await send(.POST, "/nodes/\(segment(node))/join-token", API.JoinRequest(address: address))
    }

    // MARK: - SSH keys and buildpacks (admin only)

    public func keys() async throws -> [API.SSHKey] { try await get("/keys") }
    public func addKey(publicKey: String, name: String) async throws -> API.SSHKey {
        try await send(.POST, "/keys", API.AddKey(publicKey: publicKey, name: name))
    }
    public func removeKey(name: String) async throws {
        let _: [String: String] = try await delete("/keys/\(segment(name))")
    }
    public func buildpacks() async throws -> [Buildpack] { try await get("/buildpacks") }
    /// Adds a buildpack: a tree already sent to the control plane's Keg, or a git URL it clones.
    public func addBuildpack(_ request: API.AddBuildpack) async throws -> Buildpack { try await send(.POST, "/buildpacks", request) }

    /// Makes the join token of build worker `worker` (`kbuild worker --join`).
    public func workerJoinToken(worker: String) async throws -> API.WorkerJoinToken {
        try await send(.POST, "/workers/\(segment(worker))/join-token", [String: String]())
    }

    // MARK: - Trace (admin only)

    /// Up from what `target` names to its commit, and down to what runs it (`kbuild trace X`).
    /// For a PID: `node` limits the lookup to one node; `ancestors` are the PID's on its machine (the PID first).
    public func trace(_ target: String, node: String? = nil, ancestors: [Int32]? = nil) async throws -> TraceResult {
        var query = "target=\(segment(target))"
        if let node { query += "&node=\(segment(node))" }
        if let ancestors { query += "&ancestors=" + ancestors.map(String.init).joined(separator: ",") }
        return try await get("/trace?" + query)
    }
    /// What changed between two releases (`APP@vN..vM`).
    public func traceDiff(_ target: String) async throws -> ReleaseDiff { try await get("/trace/diff?target=\(segment(target))") }
    /// A file as it is in the revision `target` runs.
    public func traceFile(_ target: String, path: String) async throws -> [UInt8] {
        Array(try await request(.GET, "/trace/file?target=\(segment(target))&path=\(segment(path))", body: nil))
    }

    // MARK: - Domains

    public func domains(_ app: String) async throws -> [String] { try await get("/apps/\(segment(app))/domains") }
    public func addDomain(_ app: String, _ domain: String) async throws -> [String] {
        try await send(.POST, "/apps/\(segment(app))/domains", API.Domain(domain: domain))
    }
    public func removeDomain(_ app: String, _ domain: String) async throws -> [String] {
        try await delete("/apps/\(segment(app))/domains/\(segment(domain.lowercased()))")
    }

    // MARK: - Logs and one-off processes (streams)

    /// The app's log lines, merged by time: the last `lines`, or (with `since`, in seconds) every line
    /// written since then, streamed however many there are.
    /// `follow`: after the recent lines the response stays open and the server pushes new ones as they are written (`--tail`).
    public func logs(_ app: String, lines: Int, process: String?, release: String?, since: Int?, follow: Bool = false) async throws -> HTTPClientResponse {
        var query = ["lines=\(lines)"]
        if let process { query.append("ps=\(segment(process))") }
        if let release { query.append("release=\(segment(release))") }
        if let since { query.append("since=\(since)") }
        if follow { query.append("follow=1") }
        return try await open(.GET, "/apps/\(segment(app))/logs?" + query.joined(separator: "&"), body: nil,
                              timeout: since == nil && !follow ? .seconds(60) : .hours(2))
    }

    /// Starts `kbuild run`: the response streams `Frame`s.
    public func run(_ app: String, _ run: API.Run) async throws -> HTTPClientResponse {
        try await open(.POST, "/apps/\(segment(app))/run", body: Data(try JSONEncoder().encode(run)), timeout: .hours(2))
    }

    /// Starts `kbuild run` with input: `input`'s frames (`Frame.stdin`, `Frame.resize`) go as they are made while
    /// the response streams the output's `Frame`s. Finish `input` once the exit status has come.
    /// `sent` is called with each frame of input as it goes (a reader of the input may then read more).
    /// With `addon`, the process runs beside that add-on of `app` (in the add-on's app: its tools, its network).
    public func run(_ app: String, addon: String? = nil, _ run: API.Run, input: AsyncStream<[UInt8]>,
                    sent: @escaping @Sendable ([UInt8]) -> Void = { _ in }) async throws -> HTTPClientResponse {
        let header = Data(try JSONEncoder().encode(run)).base64EncodedString()
        let path = "/apps/\(segment(app))" + (addon.map { "/addons/\(segment($0))" } ?? "") + "/run"
        return try await open(.POST, path, body: nil, timeout: .hours(24),
                              stream: .stream(input.map { bytes in sent(bytes); return ByteBuffer(bytes: bytes) }, length: .unknown),
                              headers: [(API.Run.header, header)])
    }

    // MARK: - Pushes (the git hook of the control plane's machine)

    /// What the hook needs before it reads a push of `app` into the Keg.
    public func pushTerms(_ app: String) async throws -> API.PushTerms { try await get("/apps/\(segment(app))/push-terms") }

    /// Hands a push, its tree already in the Keg, to the control plane's deploy pipeline; `say` gets its progress as
    /// it streams back. Returns when the push is deployed; throws the control plane's reason when it is rejected.
    public func push(_ app: String, _ push: API.Push, say: @Sendable (String) -> Void) async throws {
        // As long as a build may take (its limit is at most 7 days), the transfers and the rollout: the keepalive
        // frames show the control plane is there all along.
        let response = try await open(.POST, "/apps/\(segment(app))/pushes", body: Data(try JSONEncoder().encode(push)), timeout: .hours(24 * 8))
        var reader = Frame.Reader()
        do {
            for try await chunk in response.body {
                for (kind, payload) in try reader.frames(adding: chunk.readableBytesView) {
                    switch kind {
                    case Frame.stderr where !payload.isEmpty: say(String(decoding: payload, as: UTF8.self))
                    case Frame.error: throw KbuildError(.invalidArgument, String(decoding: payload, as: UTF8.self))
                    case Frame.exit:
                        guard Frame.status(payload) == 0 else { throw KbuildError(.invalidArgument, "kbuild at \(base) refused the push") }
                        return
                    default: break
                    }
                }
            }
        } catch let error as KbuildError {
            throw error
        } catch {
            throw KbuildError(.io, "lost kbuild at \(base) while it deployed the push (\(error)): the push is refused; kbuild releases shows what was released")
        }
        throw KbuildError(.io, "kbuild at \(base) ended the push without a verdict (did it stop?): the push is refused; push again")
    }

    // MARK: - Plumbing

    public func get<T: Decodable>(_ path: String, as type: T.Type = T.self) async throws -> T {
        try decode(try await request(.GET, path, body: nil), path: path)
    }

    public func send<T: Decodable>(_ method: HTTPMethod, _ path: String, _ body: some Encodable, as type: T.Type = T.self,
                                   timeout: TimeAmount = .seconds(60)) async throws -> T {
        try decode(try await request(method, path, body: Data(try JSONEncoder().encode(body)), timeout: timeout), path: path)
    }

    public func delete<T: Decodable>(_ path: String, as type: T.Type = T.self) async throws -> T {
        try decode(try await request(.DELETE, path, body: nil), path: path)
    }

    func request(_ method: HTTPMethod, _ path: String, body: Data?, timeout: TimeAmount = .seconds(60)) async throws -> Data {
        let response = try await open(method, path, body: body, timeout: timeout)
        return Data(buffer: try await response.body.collect(upTo: 64 << 20))
    }

    /// The response as it arrives; an error status is thrown as the server's error.
    /// `stream`: a body sent as it is made (with `headers`), while the response comes.
    public func open(_ method: HTTPMethod, _ path: String, body: Data?, timeout: TimeAmount,
                     stream: HTTPClientRequest.Body? = nil, contentType: String = "application/vnd.kbuild.frames",
                     headers: [(String, String)] = []) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: base + API.prefix + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "User-Agent", value: "kbuild-client/\(API.version)")
        request.headers.add(name: API.versionHeader, value: String(API.version))
        request.headers.add(name: "Kbuild-Actor", value: actor)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: Array(body)))
        } else if let stream {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = stream
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout)
        } catch let error as NIOSSLError {
            throw KbuildError(.io, "failed to reach kbuild at \(base) over TLS (\(error)): is its certificate kbuild's own? Set KBUILD_CA_FILE to the control plane's DATA/tls/ca.crt")
        } catch {
            throw KbuildError(.io, "failed to reach kbuild at \(base): \(error)")
        }
        if let theirs = response.headers.first(name: API.versionHeader), theirs != String(API.version) {
            throw KbuildError(.unsatisfiable, "kbuild at \(base) speaks API version \(theirs), this client \(API.version): use a kbuild of the server's version")
        }
        guard (200..<300).contains(response.status.code) else {
            let bytes = Data(buffer: try await response.body.collect(upTo: 1 << 20))
            if let body = try? JSONDecoder().decode(API.ErrorAnswer.self, from: bytes) {
                throw KbuildError(KbuildError.Code(rawValue: body.error.code) ?? .io, body.error.message)
            }
            if response.headers.first(name: API.versionHeader) == nil {
                throw KbuildError(.io, "\(base) is not a kbuild API, or a kbuild older than API version \(API.version) (it answered \(response.status.code) to \(method) \(API.prefix + path)): check KBUILD_URL")
            }
            throw KbuildError(.io, "kbuild at \(base) answered \(response.status.code) to \(method) \(path)")
        }
        guard response.headers.first(name: API.versionHeader) != nil else {
            throw KbuildError(.io, "\(base) is not a kbuild API, or a kbuild older than API version \(API.version) (no \(API.versionHeader) header in its answer to \(method) \(API.prefix + path)): check KBUILD_URL")
        }
        return response
    }

    func decode<T: Decodable>(_ data: Data, path: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(T.self, from: data)
        } catch {
            throw KbuildError(.corrupt, "failed to read kbuild's answer to \(path) from \(base): \(error)")
        }
    }

    /// RFC 3986's unreserved characters (ASCII only: `.alphanumerics` would let other scripts' letters through raw).
    static let unreserved = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")

    /// One path segment, percent-encoded (names are validated by the server; this keeps `?`, `#` and `/` out).
    func segment(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: KbuildClient.unreserved) ?? text
    }
}
