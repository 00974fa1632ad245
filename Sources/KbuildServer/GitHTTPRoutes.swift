public import Hummingbird
import KbuildCore
import Foundation
import Glibc
import CKbuild
import HTTPTypes

/// git's smart HTTP protocol, served by running `git http-backend` (CGI) for
/// each request: `GET /APP.git/info/refs?service=…`, `POST /APP.git/git-receive-pack`
/// and `POST /APP.git/git-upload-pack`. The request body, chunked or not, is
/// spooled to a file first (so any size works and the backend never waits on
/// the client), then the backend's output is streamed back as it comes:
/// the pusher sees the build's log live.
public struct GitHTTPRoutes<Context: RequestContext>: Sendable {
    /// Where the bare repositories are (`<data>/git`).
    public let projectRoot: String
    /// Where request bodies are spooled.
    public let spoolDir: String
    /// Added to the backend's (and so the hook's) environment.
    public let environment: [String: String]
    /// Largest request body.
    public let maxBody: Int

    public init(projectRoot: String, spoolDir: String, environment: [String: String], maxBody: Int = 4 << 30) {
        self.projectRoot = projectRoot
        self.spoolDir = spoolDir
        self.environment = environment
        self.maxBody = maxBody
    }

    public func register(on router: Router<Context>) {
        router.get("/:repo/info/refs") { request, context in
            try await serve(request, context, path: "info/refs")
        }
        for service in ["git-receive-pack", "git-upload-pack"] {
            router.post("/:repo/\(service)") { request, context in
                try await serve(request, context, path: service)
            }
        }
    }

    /// The app a repository path names (`APP.git` or `APP`), if it is a valid app name.
    static func appName(_ repo: String) -> String? {
        let name = repo.hasSuffix(".git") ? String(repo.dropLast(4)) : repo
        return Names.isAppName(name) ? name : nil
    }

    func serve(_ request: Request, _ context: Context, path: String) async throws -> Response {
        let repo = context.parameters.get("repo") ?? ""
        let service = path == "info/refs" ? (request.uri.queryParameters.get("service") ?? "") : path
        guard service == "git-receive-pack" || service == "git-upload-pack" else {
            return plain(.forbidden, "kbuild serves git's smart HTTP protocol only (service=git-receive-pack or git-upload-pack)\n")
        }
        guard let app = GitHTTPRoutes.appName(repo) else {
            return gitError(service, "invalid app name \(repo.debugDescription): use 1 to 63 of a-z, 0-9 and '-', starting with a letter")
        }
        var st = stat()
        guard stat("\(projectRoot)/\(app).git/HEAD", &st) == 0 else {
            return gitError(service, "no app named \(app): create it with `kbuild apps:create \(app)`")
        }

        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("GIT_") && !$0.key.hasPrefix("HTTP_") }
        env.merge(environment) { _, new in new }
        // An app token pushes as itself; the admin token's holder names the pusher.
        let user = request.headers[TokenAuthMiddleware<Context>.tokenNameHeader].map { "token:\($0)" }
            ?? BasicAuth.user(request.headers[.authorization]) ?? "token"
        let host = request.head.authority ?? "localhost"
        env["GIT_PROJECT_ROOT"] = projectRoot
        env["GIT_HTTP_EXPORT_ALL"] = "1"
        env["PATH_INFO"] = "/\(app).git/\(path)"
        env["REQUEST_METHOD"] = request.method.rawValue
        env["QUERY_STRING"] = request.uri.query ?? ""
        env["REMOTE_USER"] = user
        env["REMOTE_ADDR"] = "127.0.0.1"
        env["SERVER_PROTOCOL"] = "HTTP/1.1"
        env["KBUILD_PUSHER"] = user
        // The hook ends its wait when this server is gone (its pipes may be held open by the hook's own ancestors).
        env["KBUILD_SERVER_PID"] = String(getpid())
        env["KBUILD_REPOSITORY_URL"] = "http://\(host)/\(app).git"
        if let type = request.headers[.contentType] { env["CONTENT_TYPE"] = type }
        if let encoding = request.headers[.contentEncoding] { env["HTTP_CONTENT_ENCODING"] = encoding }
        if let proto = request.headers[HTTPField.Name("Git-Protocol")!] { env["GIT_PROTOCOL"] = proto }

        // The body, spooled to an unlinked file that becomes the backend's stdin.
        var input = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if request.method == .post {
            close(input)
            input = kb_open_tmpfile(spoolDir)
            guard input >= 0 else { throw KbuildError.syscall("open", spoolDir, verb: "receive a git request") }
            var size = 0
            do {
                for try await buffer in request.body {
                    size += buffer.readableBytes
                    guard size <= maxBody else {
                        close(input)
                        return plain(.contentTooLarge, "the request is over \(maxBody >> 20) MiB\n")
                    }
                    try buffer.readableBytesView.withContiguousStorageIfAvailable { raw in
                        var offset = 0
                        while offset < raw.count {
                            let n = write(input, raw.baseAddress! + offset, raw.count - offset)
                            if n < 0 && errno == EINTR { continue }
                            guard n > 0 else { throw KbuildError.syscall("write", spoolDir, verb: "receive a git request") }
                            offset += n
                        }
                    }
                }
            } catch {
                close(input)
                throw error
            }
            lseek(input, 0, SEEK_SET)
            env["CONTENT_LENGTH"] = String(size)
        }

        let process: CGIProcess
        do {
            process = try CGIProcess(["/usr/bin/git", "http-backend"], environment: env, stdin: input)
            close(input)
        } catch {
            close(input)
            throw error
        }
        let (status, headers, rest) = try await process.readHeaders()
        let body = ResponseBody { writer in
            do {
                if !rest.isEmpty { try await writer.write(ByteBuffer(bytes: rest)) }
                while let chunk = try await process.read() {
                    try await writer.write(ByteBuffer(bytes: chunk))
                }
            } catch {
                // The client went away (git's keepalives during a quiet build
                // find that out within seconds): the push ends here, whole.
                await process.finish(abandoned: true)
                throw error
            }
            await process.finish(abandoned: false)
            try await writer.finish(nil)
        }
        return Response(status: status, headers: headers, body: body)
    }

    func plain(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// A refusal git shows its user as `remote error: …` (an ERR packet in
    /// the ref advertisement), instead of a bare HTTP status.
    func gitError(_ service: String, _ message: String) -> Response {
        func pkt(_ s: String) -> String { String(format: "%04x", s.utf8.count + 4) + s }
        let body = pkt("# service=\(service)\n") + "0000" + pkt("ERR \(message)\n")
        return Response(status: .ok, headers: [.contentType: "application/x-\(service)-advertisement", .cacheControl: "no-cache"],
                        body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// A CGI program's run: its stdout read without blocking a thread (the pipe is
/// non-blocking; an empty pipe waits on a short, growing sleep), reaped at the
/// end without blocking one either. It leads a process group of its own, so
/// everything it starts (for a push: `git receive-pack`, the pre-receive hook
/// and the build it waits on) can be ended with it.
final class CGIProcess: Sendable {
    /// The process, and the id of its process group.
    let pid: pid_t
    let output: Int32

    init(_ argv: [String], environment: [String: String], stdin: Int32) throws {
        var fds: [Int32] = [0, 0]
        guard kb_pipe_cloexec(&fds) == 0 else { throw KbuildError.syscall("pipe2", argv[0], verb: "start") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let args = argv.map { strdup($0) } + [nil]
        let env = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (args + env).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attributes, args, env)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw KbuildError.syscall("posix_spawn", argv[0], errno: rc, verb: "start")
        }
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        self.pid = pid
        self.output = fds[0]
    }

    /// The next bytes of stdout, nil at its end.
    func read() async throws -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var pause: UInt64 = 1_000_000
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(output, $0.baseAddress, $0.count) }
            if n > 0 { return Array(buffer[0..<n]) }
            if n == 0 { return nil }
            guard errno == EAGAIN || errno == EINTR else { throw KbuildError.syscall("read", "the output of git http-backend", verb: "serve git") }
            try await Task.sleep(nanoseconds: pause)
            pause = min(pause * 2, 50_000_000)
        }
    }

    /// CGI headers (`Status:` and the rest) up to the blank line, and what followed them.
    func readHeaders() async throws -> (HTTPResponse.Status, HTTPFields, [UInt8]) {
        var data: [UInt8] = []
        while true {
            let chunk: [UInt8]?
            do {
                chunk = try await read()
            } catch {
                await finish(abandoned: true)
                throw error
            }
            guard let chunk else {
                await finish(abandoned: true)
                throw KbuildError(.io, "git http-backend ended before its headers")
            }
            data += chunk
            var end: (Int, Int)?
            for i in 0..<data.count where data[i] == 0x0a {
                if i + 1 < data.count, data[i + 1] == 0x0a { end = (i, 2); break }
                if i + 2 < data.count, data[i + 1] == 0x0d, data[i + 2] == 0x0a { end = (i, 3); break }
            }
            guard let (at, skip) = end else {
                guard data.count < 65536 else {
                    await finish(abandoned: true)
                    throw KbuildError(.io, "git http-backend sent headers over 64 KiB")
                }
                continue
            }
            var status = HTTPResponse.Status.ok
            var headers = HTTPFields()
            for line in String(decoding: data[0..<at], as: UTF8.self).split(whereSeparator: \.isNewline) {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let name = line[..<colon].trimmingCharacters(in: .whitespaces)
                let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                if name.lowercased() == "status" {
                    status = HTTPResponse.Status(code: Int(value.prefix(3)) ?? 500)
                } else if let field = HTTPField.Name(name) {
                    headers.append(HTTPField(name: field, value: value))
                }
            }
            return (status, headers, Array(data[(at + skip)...]))
        }
    }

    /// Closes the pipe and reaps the process on a short, growing sleep (never
    /// blocking a thread). `abandoned`: the client went away, so the whole
    /// group goes at once (http-backend, receive-pack, the hook: nothing
    /// deploys and nothing is left). Otherwise it has 5 s to exit after its
    /// output ended. Either way, once it has exited (a zombie, so its id
    /// cannot be reused yet) whatever is left in its group is killed, and
    /// then it is reaped.
    func finish(abandoned: Bool) async {
        close(output)
        if abandoned { kill(-pid, SIGKILL) }
        let started = ContinuousClock.now
        var pause: UInt64 = 1_000_000
        var killed = abandoned
        while !CGIProcess.hasExited(pid) {
            if !killed && (Task.isCancelled || ContinuousClock.now - started > .seconds(5)) {
                kill(-pid, SIGKILL)
                killed = true
            }
            if Task.isCancelled { break }  // killed: the blocking wait below is over at once
            try? await Task.sleep(nanoseconds: pause)
            pause = min(pause * 2, 20_000_000)
        }
        kill(-pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// Whether `pid`, a child not reaped yet, has exited (is a zombie).
    static func hasExited(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let paren = stat.lastIndex(of: ")") else { return true }
        let state = stat[stat.index(after: paren)...].drop(while: { $0 == " " }).first
        return state == "Z" || state == "X"
    }
}
