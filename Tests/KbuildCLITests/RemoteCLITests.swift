import Foundation
import XCTest

/// The CLI as it runs on another machine: no data dir, an empty HOME, only
/// KBUILD_URL and KBUILD_TOKEN, in a mount namespace where the control
/// plane's data dir is an empty tmpfs (so a verb that read it would find
/// nothing, not the real one). Every verb either answers through the API or
/// refuses, saying why; none answers from a local data dir.
final class RemoteCLITests: XCTestCase {
    struct Remote {
        let server: KbuildServer
        let data: String
        let home: String

        /// `within`: stopped (SIGTERM) after that many seconds, for a verb that runs until interrupted (`logs --tail`).
        func run(_ args: [String], env: [String: String] = [:], cwd: String? = nil, within seconds: Int? = nil, stdin: Data? = nil) throws -> Result {
            // sh -c SCRIPT $0 $1…: hide the data dir, then exec kbuild with the arguments.
            let script = #"mount -t tmpfs -o size=1m,mode=0700 kbuild-hidden "$0" && exec "$@""#
            var environment = ["HOME": home, "XDG_CONFIG_HOME": "", "KBUILD_URL": server.url, "KBUILD_TOKEN": server.token]
            for (k, v) in env { environment[k] = v }
            let stop = seconds.map { ["/usr/bin/timeout", String($0)] } ?? []
            return try sh("/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/sh", "-c", script, data] + stop + [kbuildBinary] + args,
                          env: environment, stdin: stdin, cwd: cwd ?? home)  // never the test's own directory (a git:remote would change its repository)
        }
    }

    func makeRemote(_ name: String) throws -> Remote {
        let data = try makeData(name)
        let server = try startKbuildUp(self, data: data)
        return Remote(server: server, data: data, home: try tempDir(self, name + "-home"))
    }

    func testAppsAreMadeListedDeployedAndListedFromAnotherMachine() throws {
        let remote = try makeRemote("remote-verbs")
        let made = try remote.run(["apps:create", "web", "--stack", "busybox"])
        XCTAssertEqual(made.status, 0, made.stderr)
        XCTAssertTrue(made.stdout.contains("Created web on \(remote.server.url)"), made.stdout)
        XCTAssertTrue(made.stdout.contains("git remote add kbuild \(remote.server.url)/web.git"), made.stdout)
        // The app exists on the control plane, as its own CLI sees it.
        XCTAssertTrue(try kbuild(["apps"], dataDir: remote.data).stdout.contains("web  stack busybox"))

        let apps = try remote.run(["apps"])
        XCTAssertEqual(apps.status, 0, apps.stderr)
        XCTAssertEqual(apps.stdout, "web  stack busybox  build-network egress  deploys main\n")
        XCTAssertTrue(try remote.run(["apps", "--json"]).stdout.contains(#""name" : "web""#))

        // A push over HTTP with the token, then every process of every app, with the commit it runs.
        let work = try tempDir(self, "remote-src")
        try writeFile(work + "/Procfile", "web: ./serve.sh\n")
        try writeFile(work + "/serve.sh", "#!/bin/sh\nexec busybox httpd -f -p \"0.0.0.0:$PORT\" -h www\n", mode: 0o755)
        try writeFile(work + "/www/index.html", "hello\n")
        try git(["init", "-q"], in: work)
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "First"], in: work)
        let commit = trimmed(try git(["rev-parse", "HEAD"], in: work).stdout)
        let pushURL = remote.server.url.replacingOccurrences(of: "http://", with: "http://admin:\(remote.server.token)@") + "/web.git"
        let pushed = try git(["push", pushURL, "HEAD:main"], in: work)
        XCTAssertEqual(pushed.status, 0, pushed.stderr)
        var all = Result(status: 1, stdout: "", stderr: "")
        try waitUntil("web.1 runs", timeout: 60) {
            all = try remote.run(["ps", "--all"])
            return all.stdout.contains("web.web.1  healthy")
        }
        XCTAssertEqual(all.status, 0, all.stderr)
        XCTAssertTrue(all.stdout.contains("node local") && all.stdout.contains("v1  \(commit.prefix(7))"), all.stdout)
        XCTAssertTrue(try remote.run(["ps", "--all", "--json"]).stdout.contains(#""commit" : "\#(commit)""#))

        // The app list says of each app's release and rollout what the app's own page says.
        func api(_ path: String) throws -> Any {
            let r = try sh("/usr/bin/curl", ["-sf", "-H", "Authorization: Bearer \(remote.server.token)", remote.server.url + "/api/v1" + path])
            return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
        }
        let listed = try XCTUnwrap((try api("/apps") as? [[String: Any]])?.first { $0["name"] as? String == "web" })
        let page = try XCTUnwrap(try api("/apps/web") as? [String: Any])
        for key in ["version", "kid", "status", "commit", "image", "createdBy"] {
            XCTAssertEqual((listed["release"] as? NSDictionary)?[key] as? NSObject, (page["release"] as? NSDictionary)?[key] as? NSObject, key)
        }
        XCTAssertEqual((listed["release"] as? NSDictionary)?["status"] as? String, "healthy")
        XCTAssertEqual(listed["rollout"] as? NSDictionary, page["rollout"] as? NSDictionary)
        XCTAssertEqual(listed["domains"] as? NSArray, page["domains"] as? NSArray)

        let nodes = try remote.run(["nodes"])
        XCTAssertEqual(nodes.status, 0, nodes.stderr)
        XCTAssertTrue(nodes.stdout.hasPrefix("local  alive  "), nodes.stdout)
        XCTAssertTrue(nodes.stdout.contains("1 processes"), nodes.stdout)

        // Trace from another machine answers what the control plane's own CLI answers, in each of its forms.
        for target in ["web", "web.web.1", "web@v1", commit] {
            let there = try remote.run(["trace", target, "--json"])
            XCTAssertEqual(there.status, 0, "\(target): \(there.stderr)")
            XCTAssertEqual(there.stdout, try kbuild(["trace", target, "--json"], dataDir: remote.data).stdout, target)
        }
        let pid = try XCTUnwrap(all.stdout.split(separator: " ").drop { $0 != "PID" }.dropFirst().first.map(String.init))
        let byPID = try remote.run(["trace", pid])
        XCTAssertEqual(byPID.status, 0, byPID.stderr)
        XCTAssertTrue(byPID.stdout.contains("commit   \(commit)"), byPID.stdout)
        XCTAssertEqual(try remote.run(["trace", "web", "--file", "www/index.html"]).stdout, "hello\n")
        let missing = try remote.run(["trace", "nosuch"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("nosuch"), missing.stderr)

        let releases = try remote.run(["releases", "web"])
        XCTAssertEqual(releases.status, 0, releases.stderr)
        XCTAssertTrue(releases.stdout.contains("v1"), releases.stdout)
        XCTAssertEqual(try remote.run(["config:set", "web", "GREETING=hi"]).status, 0)
        XCTAssertTrue(try remote.run(["config", "web"]).stdout.contains("GREETING"))
        let diff = try remote.run(["trace", "web@v1..v2"])
        XCTAssertEqual(diff.status, 0, diff.stderr)
        XCTAssertTrue(diff.stdout.contains("config     +GREETING (values hidden)"), diff.stdout)

        // The verbs that read the control plane's data dir before, through the API now.
        let images = try remote.run(["image", "ls", "web"])
        XCTAssertEqual(images.status, 0, images.stderr)
        XCTAssertTrue(images.stdout.contains("commit \(commit.prefix(7))"), images.stdout)
        let build = try XCTUnwrap(pushed.stderr.components(separatedBy: "Build ").dropFirst().first?.split(separator: " ").first.map(String.init), pushed.stderr)
        let buildLog = try remote.run(["logs", build])
        XCTAssertEqual(buildLog.status, 0, buildLog.stderr)
        XCTAssertEqual(buildLog.stdout, try kbuild(["logs", build], dataDir: remote.data).stdout)
        XCTAssertTrue(buildLog.stdout.contains("Procfile"), buildLog.stdout)
        let set = try remote.run(["apps:set", "web", "build-network=none"])
        XCTAssertEqual(set.status, 0, set.stderr)
        XCTAssertTrue(set.stdout.contains("build-network none"), set.stdout)
        XCTAssertTrue(try kbuild(["apps"], dataDir: remote.data).stdout.contains("build-network none"))
        let badSet = try remote.run(["apps:set", "web", "stack=nosuch"])
        XCTAssertNotEqual(badSet.status, 0)
        XCTAssertTrue(badSet.stderr.contains("nosuch"), badSet.stderr)
        let purged = try remote.run(["builds:cache:purge", "web"])
        XCTAssertEqual(purged.status, 0, purged.stderr)
        XCTAssertTrue(purged.stdout.contains("cache epoch 1"), purged.stdout)
        let token = try remote.run(["tokens:create", "ci", "--app", "web"])
        XCTAssertEqual(token.status, 0, token.stderr)
        XCTAssertTrue(token.stdout.hasPrefix("kbt_"), token.stdout)
        XCTAssertTrue(try remote.run(["tokens"]).stdout.contains("ci  apps web  by "))
        XCTAssertEqual(try remote.run(["tokens:revoke", "ci"]).stdout, "Revoked ci\n")
        XCTAssertFalse(try kbuild(["tokens"], dataDir: remote.data).stdout.contains("ci "))
        // SSH keys, on the control plane's authorized_keys file; a bad key and an unknown name are errors naming them.
        let keyDir = try tempDir(self, "remote-key")
        XCTAssertEqual(try sh("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "ada@laptop", "-f", keyDir + "/ada"]).status, 0)
        let addedKey = try remote.run(["keys:add", keyDir + "/ada.pub"])
        XCTAssertEqual(addedKey.status, 0, addedKey.stderr)
        XCTAssertTrue(addedKey.stdout.hasPrefix("Added ssh-ed25519 key SHA256:") && addedKey.stdout.hasSuffix(" as ada\n"), addedKey.stdout)
        XCTAssertTrue(try String(contentsOfFile: remote.data + "/ssh/authorized_keys", encoding: .utf8).contains("git-shell --key ada "))
        XCTAssertTrue(try remote.run(["keys"]).stdout.hasPrefix("ada  ssh-ed25519  SHA256:"))
        let privateKey = try remote.run(["keys:add", keyDir + "/ada"])
        XCTAssertNotEqual(privateKey.status, 0)
        XCTAssertTrue(privateKey.stderr.contains("failed to read the public key"), privateKey.stderr)
        XCTAssertEqual(try remote.run(["keys:remove", "ada"]).status, 0)
        XCTAssertEqual(try remote.run(["keys"]).stdout, "")
        XCTAssertNotEqual(try remote.run(["keys:remove", "nobody"]).status, 0)
        // Buildpacks: listed; one added from a directory on this machine (its objects sent, checked there) and used by name.
        XCTAssertTrue(try remote.run(["buildpack", "ls"]).stdout.contains("procfile  K-"))
        let pack = try tempDir(self, "remote-pack")
        try writeFile(pack + "/bin/detect", "#!/bin/sh\necho Remote\n", mode: 0o755)
        try writeFile(pack + "/bin/compile", "#!/bin/sh\necho '-----> Built by a buildpack sent from afar'\n", mode: 0o755)
        let addedPack = try remote.run(["buildpack", "add", pack, "--name", "afar"])
        XCTAssertEqual(addedPack.status, 0, addedPack.stderr)
        XCTAssertTrue(try kbuild(["buildpack", "ls"], dataDir: remote.data).stdout.contains("afar  K-"))
        let notAPack = try remote.run(["buildpack", "add", keyDir, "--name", "broken"])
        XCTAssertNotEqual(notAPack.status, 0)
        XCTAssertTrue(notAPack.stderr.contains("bin/detect") || notAPack.stderr.contains("bin/compile"), notAPack.stderr)
        XCTAssertFalse(try kbuild(["buildpack", "ls"], dataDir: remote.data).stdout.contains("broken"))
        // git:remote names the server the CLI is pointed at; git gets the token from the CLI's own (KBUILD_TOKEN), never from .git/config.
        let added = try remote.run(["git:remote", "web", "--remote", "there"], cwd: work)
        XCTAssertEqual(added.status, 0, added.stderr)
        XCTAssertEqual(trimmed(try git(["remote", "get-url", "there"], in: work).stdout), remote.server.url + "/web.git")
        XCTAssertFalse(try String(contentsOfFile: work + "/.git/config", encoding: .utf8).contains(remote.server.token))
        try writeFile(work + "/www/index.html", "again\n")
        try git(["commit", "-q", "-am", "Again"], in: work)
        let viaRemote = try git(["push", "there", "HEAD:main"], in: work,
                                env: ["HOME": remote.home, "KBUILD_URL": remote.server.url, "KBUILD_TOKEN": remote.server.token])
        XCTAssertEqual(viaRemote.status, 0, viaRemote.stderr)

        // Nothing was written on "this machine".
        XCTAssertFalse(FileManager.default.fileExists(atPath: remote.home + "/.kbuild"), "the CLI made a data dir in HOME")
    }

    /// `kbuild run` from another machine, as `heroku run`: what is piped in is
    /// the command's input; on a terminal the command gets one of its own (its
    /// size, ^C to its foreground job); the exit status is kbuild's.
    func testRunTakesInputAndATerminalFromAnotherMachine() throws {
        let remote = try makeRemote("remote-run")
        let work = try makeApp("shell", data: remote.data)
        XCTAssertEqual(try git(["push", "kbuild", "main"], in: work).status, 0)
        // Piped input, read as it comes; stdout and stderr apart; the input's end ends `cat`.
        let piped = try remote.run(["run", "shell", "--", "sh", "-c", "read first; echo \"got $first\"; cat; echo done >&2; exit 3"],
                                   stdin: Data("hello\nthe rest\n".utf8))
        XCTAssertEqual(piped.status, 3, piped.stderr)
        XCTAssertEqual(piped.stdout, "got hello\nthe rest\n")
        XCTAssertEqual(piped.stderr, "done\n")
        XCTAssertEqual(try remote.run(["run", "shell", "--", "true"], stdin: Data()).status, 0)
        // A run request that is not one: 400, naming the header, nothing run.
        for header in ["not base64!", Data("{\"command\":".utf8).base64EncodedString()] {
            let r = try sh("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "Authorization: Bearer \(remote.server.token)",
                                             "-H", "Kbuild-Run: \(header)", "--data-binary", "", remote.server.url + "/api/v1/apps/shell/run"])
            XCTAssertTrue(r.stdout.hasSuffix("\n400") && r.stdout.contains("invalid Kbuild-Run header"), "\(header): \(r.stdout)")
        }

        // On a terminal (script(1) gives the CLI one, 30 rows by 100 columns): the command's is a terminal of that size,
        // its output one stream, and --no-tty gives it none.
        func onTerminal(_ command: String, input: Data? = nil) throws -> Result {
            let env = "HOME=\(remote.home) XDG_CONFIG_HOME= KBUILD_URL=\(remote.server.url) KBUILD_TOKEN=\(remote.server.token)"
            return try sh("/usr/bin/script", ["-qefc", "stty rows 30 cols 100; env -u KBUILD_DATA_DIR \(env) \(kbuildBinary) \(command)", "/dev/null"],
                          stdin: input)
        }
        let sized = try onTerminal("run shell -- sh -c 'test -t 0 && test -t 1 && echo on-a-terminal; stty size; echo to-stderr >&2'")
        XCTAssertEqual(sized.status, 0, sized.stdout + sized.stderr)
        XCTAssertTrue(sized.stdout.contains("on-a-terminal"), sized.stdout)
        XCTAssertTrue(sized.stdout.contains("30 100"), sized.stdout)
        XCTAssertTrue(sized.stdout.contains("to-stderr"), "the terminal is one stream: \(sized.stdout)")
        let plain = try onTerminal("run --no-tty shell -- sh -c 'test -t 1 || echo no-terminal'")
        XCTAssertTrue(plain.stdout.contains("no-terminal"), plain.stdout)
        // ^C typed on the terminal reaches the command's foreground job: sleep ends at once, by SIGINT (130).
        let started = Date()
        let interrupted = try sh("/bin/sh", ["-c", "(sleep 4; printf '\\003'; sleep 2) | /usr/bin/script -qefc 'env -u KBUILD_DATA_DIR HOME=\(remote.home) XDG_CONFIG_HOME= KBUILD_URL=\(remote.server.url) KBUILD_TOKEN=\(remote.server.token) \(kbuildBinary) run shell -- sleep 60' /dev/null"])
        XCTAssertEqual(interrupted.status, 130, interrupted.stdout + interrupted.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(started), 30, "^C ended the command")
        // A command that runs past the server's 60 s idle limit with its input open and nothing typed: the CLI's
        // keepalives hold the request, and the command ends on its own.
        let long = Process()
        long.executableURL = URL(fileURLWithPath: kbuildBinary)
        long.arguments = ["run", "shell", "--", "sh", "-c", "sleep 65; echo still-here"]
        long.environment = ["HOME": remote.home, "KBUILD_URL": remote.server.url, "KBUILD_TOKEN": remote.server.token, "PATH": "/usr/bin:/bin"]
        let open = Pipe(), output = Pipe()
        long.standardInput = open  // held open, never written
        long.standardOutput = output
        try long.run()
        let printed = output.fileHandleForReading.readDataToEndOfFile()
        long.waitUntilExit()
        try open.fileHandleForWriting.close()
        XCTAssertEqual(long.terminationStatus, 0)
        XCTAssertEqual(String(decoding: printed, as: UTF8.self), "still-here\n")
    }

    func testVerbsThatReadTheDataDirRefuseInsteadOfAnsweringFromAnEmptyOne() throws {
        let remote = try makeRemote("remote-refuse")
        XCTAssertEqual(try kbuild(["apps:create", "web", "--stack", "busybox"], dataDir: remote.data).status, 0)
        // Each with the verb as the message names it.
        let verbs: [(String, [String])] = [
            ("image export", ["image", "export", "K-1234abcd", "/tmp/x"]),
            ("ref ls", ["ref", "ls"]), ("ref get", ["ref", "get", "apps/web"]), ("keg stats", ["keg", "stats"]), ("keg fsck", ["keg", "fsck"]),
            ("stack ls", ["stack", "ls"]), ("source import", ["source", "import", "HEAD"]),
        ]
        for (verb, args) in verbs {
            let r = try remote.run(args)
            XCTAssertNotEqual(r.status, 0, "\(args) answered: \(r.stdout)")
            XCTAssertTrue(r.stderr.contains("kbuild \(verb) works only on the control plane's machine") && r.stderr.contains(remote.server.url),
                          "\(args): \(r.stderr)")
            XCTAssertEqual(r.stdout, "", "\(args) printed an answer")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: remote.home + "/.kbuild"), "a refused verb made a data dir in HOME")

        // On the control plane's machine the same verbs read its data dir, whatever KBUILD_URL says: named with
        // --data-dir or KBUILD_DATA_DIR, or with KBUILD_URL naming this machine's own server by another of its names.
        let env = ["KBUILD_URL": remote.server.url, "KBUILD_TOKEN": remote.server.token]
        let named = try sh(kbuildBinary, ["ref", "ls", "--data-dir", remote.data], env: env)
        XCTAssertEqual(named.status, 0, named.stderr)
        XCTAssertTrue(named.stdout.contains("apps/web"), named.stdout)
        let byEnv = try sh(kbuildBinary, ["apps"], env: env.merging(["KBUILD_DATA_DIR": remote.data]) { $1 })
        XCTAssertEqual(byEnv.stdout, "web  stack busybox  build-network egress  deploys main\n", byEnv.stderr)
        // HOME/.kbuild is the server's data dir, and KBUILD_URL names it as localhost.
        let home = try tempDir(self, "remote-own-home")
        try FileManager.default.createSymbolicLink(atPath: home + "/.kbuild", withDestinationPath: remote.data)
        let port = remote.server.url.split(separator: ":").last!
        let ownServer = try sh(kbuildBinary, ["ref", "ls"], env: ["KBUILD_URL": "http://localhost:\(port)", "KBUILD_TOKEN": remote.server.token,
                                                               "HOME": home])
        XCTAssertEqual(ownServer.status, 0, ownServer.stderr)
        XCTAssertTrue(ownServer.stdout.contains("apps/web"), ownServer.stdout)
    }

    func testAWrongURLTokenOrServerIsAClearError() throws {
        let remote = try makeRemote("remote-bad")
        func expect(_ env: [String: String], _ message: String, _ args: [String] = ["apps"]) throws {
            let r = try remote.run(args, env: env)
            XCTAssertNotEqual(r.status, 0, "\(env): \(r.stdout)")
            XCTAssertTrue(r.stderr.contains(message), "\(env): \(r.stderr)")
            XCTAssertEqual(r.stdout, "")
        }
        try expect(["KBUILD_URL": "http://127.0.0.1:1"], "failed to reach kbuild at http://127.0.0.1:1")
        try expect(["KBUILD_URL": "ftp://example.com"], "invalid API URL \"ftp://example.com\" (from KBUILD_URL)")
        try expect(["KBUILD_URL": remote.server.url + "/api"], "want http://HOST:PORT")
        try expect(["KBUILD_TOKEN": ""], "KBUILD_URL is set but KBUILD_TOKEN is not")
        // KBUILD_TOKEN alone (keg pull's) does not point the CLI anywhere: this machine has no kbuild up.
        try expect(["KBUILD_URL": ""], "failed to find kbuild's API", ["apps:info", "web"])
        try expect(["KBUILD_TOKEN": "wrong"], "failed to authenticate")
        try expect(["KBUILD_TOKEN": "wrong"], "failed to authenticate", ["ps", "--all"])
        // Something that answers HTTP but is not kbuild, and a kbuild of another API version.
        for (version, message) in [(nil, "is not a kbuild API"), ("2", "speaks API version 2, this client 1")] as [(String?, String)] {
            let fake = try FakeServer(self, versionHeader: version)
            try expect(["KBUILD_URL": fake.url], message)
            try expect(["KBUILD_URL": fake.url], message, ["nodes"])
        }
        // An app token may not list every process or make apps (403, said as such).
        let made = try kbuild(["tokens:create", "ci", "--app", "web"], dataDir: remote.data)
        XCTAssertNotEqual(made.status, 0, "no app web yet: \(made.stdout)")
        XCTAssertEqual(try kbuild(["apps:create", "web", "--stack", "busybox"], dataDir: remote.data).status, 0)
        let token = trimmed(try kbuild(["tokens:create", "ci", "--app", "web"], dataDir: remote.data).stdout)
        try expect(["KBUILD_TOKEN": token], "may not do that", ["ps", "--all"])
        try expect(["KBUILD_TOKEN": token], "may not do that", ["apps:create", "other", "--stack", "busybox"])
        try expect(["KBUILD_TOKEN": token], "may not do that", ["nodes"])
        // The server checks what it is sent, whatever the client checked first.
        func post(_ body: String) throws -> (status: String, body: String) {
            let r = try sh("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "Authorization: Bearer \(remote.server.token)",
                                             "-H", "Content-Type: application/json", "--data-binary", body, remote.server.url + "/api/v1/apps"])
            let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
        }
        for (body, message) in [(#"{"name":"Bad_Name"}"#, "invalid app name"), (#"{"name":"x1","buildNetwork":"wide"}"#, "invalid build network"),
                                (#"{"name":"x1","stack":"nosuch"}"#, "nosuch"), (#"{"name":"x1","stack":"busybox","deployBranch":"a..b"}"#, "invalid deploy branch"),
                                (#"{"name":"x1","stack":"busybox","build":{"memory":1,"pids":4096,"timeout":900}}"#, "invalid build memory"),
                                (#"{"name":"x1","stack":"busybox","build":{"memory":1073741824,"pids":4096,"timeout":0}}"#, "invalid build timeout"),
                                (#"{"name":"x1","stack":"busybox","maxFileSize":1}"#, "invalid max file size"), (#"{"nom":"x1"}"#, "failed to read the request body"),
                                ("not json", "failed to read the request body")] {
            let answer = try post(body)
            XCTAssertEqual(answer.status, message == "nosuch" ? "404" : "400", "\(body): \(answer.body)")
            XCTAssertTrue(answer.body.contains(message), "\(body): \(answer.body)")
        }
        // Bad requests name what was wrong, and make nothing.
        try expect([:], "invalid app name \"Bad_Name\"", ["apps:create", "Bad_Name"])
        try expect([:], "exists already", ["apps:create", "web", "--stack", "busybox"])
        try expect([:], "nosuch", ["apps:create", "other", "--stack", "nosuch"])
        try expect([:], "invalid build network", ["apps:create", "other", "--stack", "busybox", "--build-network", "wide"])
        XCTAssertEqual(try remote.run(["apps"]).stdout, "web  stack busybox  build-network egress  deploys main\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: remote.data + "/git/x1.git"), "a refused create left a repository")
    }

    /// A build's log from another machine: `logs K-… --tail` follows a running
    /// build from its start as the control plane keeps it, and ends when the
    /// build ends; without --tail a build still running is told so. The push
    /// route checks what the hook hands over, whatever the hook checked.
    func testABuildIsFollowedAndAPushIsCheckedByTheControlPlane() throws {
        let remote = try makeRemote("remote-follow")
        let work = try makeApp("slowlog", data: remote.data, files: [
            ".buildpacks": "./bp\n", "bp/bin/detect": "#!/bin/sh\necho Slow\n",
            "bp/bin/compile": "#!/bin/sh\necho '-----> Compiling slowly'\nsleep 6\necho '-----> Compiled after the wait'\n",
        ])
        try git(["update-index", "--chmod=+x", "bp/bin/detect", "bp/bin/compile"], in: work)
        try git(["commit", "-q", "-m", "slow"], in: work)
        let log = try tempDir(self, "follow-log") + "/push.log"
        let pushing = try spawnGroup("/usr/bin/git", ["-C", work, "push", "kbuild", "main"], output: log)
        addTeardownBlock { kill(-pushing, SIGKILL); _ = reap(pushing) }
        var build = ""
        try waitUntil("the build is queued", timeout: 60) {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            guard let line = text.split(separator: "\n").first(where: { $0.contains("-----> Build K-") && $0.contains(" queued") }) else { return false }
            build = String(line.split(separator: " ").first { $0.hasPrefix("K-") } ?? "")
            return true
        }
        let unfinished = try remote.run(["logs", build])
        XCTAssertNotEqual(unfinished.status, 0)
        XCTAssertTrue(unfinished.stderr.contains("build \(build) has not finished: kbuild logs \(build) --tail follows it"), unfinished.stderr)
        let followed = try remote.run(["logs", build, "--tail"])
        XCTAssertEqual(followed.status, 0, followed.stderr)
        XCTAssertTrue(followed.stdout.contains("-----> Compiling slowly"), followed.stdout)
        XCTAssertTrue(followed.stdout.contains("-----> Compiled after the wait"), followed.stdout)
        XCTAssertTrue(followed.stdout.hasSuffix("-----> Build \(build) succeeded\n"), followed.stdout)
        XCTAssertEqual(followed.stdout.components(separatedBy: "Compiling slowly").count, 2, "each line once: \(followed.stdout)")
        XCTAssertEqual(reap(pushing), 0, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
        // Finished, the same log without --tail; a prefix nothing matches is a 404 naming it.
        let stored = try remote.run(["logs", build])
        XCTAssertEqual(stored.status, 0, stored.stderr)
        XCTAssertTrue(stored.stdout.contains("-----> Compiled after the wait"), stored.stdout)
        let none = try remote.run(["logs", "K-00000000", "--tail"])
        XCTAssertNotEqual(none.status, 0)
        XCTAssertTrue(none.stderr.contains("no build K-00000000 is queued, running or finished here"), none.stderr)

        // What the hook hands over is checked again: the app, the deploy branch, the commit, the tree in the Keg.
        let source = trimmed(try kbuild(["ref", "get", "apps/slowlog/source"], dataDir: remote.data).stdout)
        let tree = try XCTUnwrap(try kbuild(["keg", "cat", source], dataDir: remote.data).stdout
            .components(separatedBy: "\"source\":\"").dropFirst().first?.prefix(while: { $0 != "\"" }), "the source record names its tree")
        let commit = trimmed(try git(["rev-parse", "HEAD"], in: work).stdout)
        func push(_ app: String = "slowlog", tree: String = String(tree), commit: String = commit, ref: String = "refs/heads/main") -> String {
            #"{"source":{"kind":"kbuild.source/v1","app":"\#(app)","source":"\#(tree)","commit":"\#(commit)","author":"a","authorEmail":"a@x","#
                + #""message":"m","committedAt":0,"pushedBy":"admin","pushedAt":0,"ref":"\#(ref)","repository":"r","files":1,"bytes":1,"links":[]}}"#
        }
        let zero = "K-" + String(repeating: "0", count: 64)
        for (body, status, message) in [
            (push("other"), "400", "the push names app"),
            (push(ref: "refs/heads/dev"), "400", "not slowlog's deploy branch main"),
            (push(commit: "HEAD"), "400", "not a git object id"),
            (push(tree: zero), "404", "is not in the Keg"),
            ("not json", "400", "failed to read the request body"),
        ] {
            let r = try sh("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "Authorization: Bearer \(remote.server.token)",
                                             "--data-binary", body, remote.server.url + "/api/v1/apps/slowlog/pushes"])
            let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            XCTAssertEqual(String(lines.last ?? ""), status, "\(body): \(r.stdout)")
            XCTAssertTrue(lines.dropLast().joined(separator: "\n").contains(message), "\(body): \(r.stdout)")
        }
        let releases = try remote.run(["releases", "slowlog"])
        XCTAssertEqual(releases.stdout.split(separator: "\n").filter { $0.hasPrefix("v") }.count, 1, "only the real push released: \(releases.stdout)")
    }
}

/// An HTTP server that is not kbuild (or claims another API version): it answers every request with 200 and `[]`.
struct FakeServer {
    let url: String

    init(_ test: XCTestCase, versionHeader: String?) throws {
        let header = versionHeader.map { "self.send_header('Kbuild-API', '\($0)')" } ?? "pass"
        let script = """
            import http.server, sys
            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    self.send_response(200)
                    \(header)
                    self.send_header('Content-Type', 'application/json')
                    self.end_headers()
                    self.wfile.write(b'[]')
                do_POST = do_GET
                def log_message(self, *a): pass
            s = http.server.HTTPServer(('127.0.0.1', 0), H)
            print(s.server_address[1], flush=True)
            s.serve_forever()
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["-c", script]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        test.addTeardownBlock { p.terminate(); p.waitUntilExit() }
        var line = ""
        while !line.contains("\n") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += String(decoding: chunk, as: UTF8.self)
        }
        guard let port = Int(line.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw NSError(domain: "FakeServer", code: 1, userInfo: [NSLocalizedDescriptionKey: "the fake server did not start: \(line)"])
        }
        url = "http://127.0.0.1:\(port)"
    }
}
