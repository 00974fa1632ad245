import Foundation
import XCTest

/// `git push kbuild main` as users do it: a real `kbuild up`, real git over
/// smart HTTP and SSH, real builds in the sandbox on the busybox stack.
final class GitPushTests: XCTestCase {
    /// One data dir with the busybox stack for the class (each test makes its own apps).
    static let data: String = {
        let dir = NSTemporaryDirectory() + "kbuild-cli-push-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        let r = try? sh(kbuildBinary, ["stack", "create", "busybox"], env: ["KBUILD_DATA_DIR": dir])
        precondition(r?.status == 0, "stack create busybox failed: \(r?.stderr ?? "")")
        XCTestObservationCenter.shared.addTestObserver(RemoveDataDirAtEnd(dir))
        return dir
    }()

    func kb(_ args: [String], data: String = GitPushTests.data) throws -> Result {
        try kbuild(args, dataDir: data)
    }

    /// A fresh app and a work tree with the given example (or files), committed, with a `kbuild` remote.
    func makeApp(_ name: String, example: String? = nil, files: [String: String] = [:], create: [String] = [], httpRemote: Bool = true) throws -> String {
        let created = try kb(["apps:create", name, "--stack", "busybox"] + create)
        XCTAssertEqual(created.status, 0, created.stderr)
        let work = try tempDir(self, name)
        if let example {
            XCTAssertEqual(try sh("/bin/cp", ["-a", "\(repositoryRoot)/examples/\(example)/.", work]).status, 0)
        }
        for (path, text) in files { try writeFile(work + "/" + path, text, mode: path.contains("bin/") || path.hasSuffix(".sh") ? 0o755 : 0o644) }
        try git(["init", "-q"], in: work)
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "First"], in: work)
        if httpRemote {
            let remote = try sh(kbuildBinary, ["git:remote", name, "--data-dir", GitPushTests.data], env: [:], stdin: nil, cwd: work)
            XCTAssertEqual(remote.status, 0, remote.stderr)
        }
        return work
    }

    func head(_ dir: String, _ rev: String = "HEAD") throws -> String { trimmed(try git(["rev-parse", rev], in: dir).stdout) }

    func images(_ app: String) throws -> [[String: Any]] {
        let r = try kb(["image", "ls", app, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]] ?? []
    }

    func testPushBuildsMemoisesAndServesTheImage() throws {
        let server = try startKbuildUp(self, data: GitPushTests.data)
        // A tree no other test pushed (builds are memoised across apps).
        let work = try makeApp("hello", example: "procfile", files: ["www/id.txt": UUID().uuidString])
        XCTAssertTrue(try String(contentsOfFile: work + "/.git/config", encoding: .utf8).contains("git-credential"), "the token is not in .git/config")
        XCTAssertFalse(try String(contentsOfFile: work + "/.git/config", encoding: .utf8).contains(server.token))

        // Cold: detected, built by the worker of `kbuild up`, streamed back as remote: lines.
        let first = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(first.status, 0, first.stderr)
        for line in ["remote: -----> Receiving", "remote: -----> Procfile app detected (buildpack procfile)", "remote:        Procfile declares types -> web",
                     "remote: -----> Image K-", "remote:        web: ./serve.sh"] {
            XCTAssertTrue(first.stderr.contains(line), "\(line) in:\n\(first.stderr)")
        }
        XCTAssertFalse(first.stderr.contains("building here"), "the worker of kbuild up took it")

        // Over 1 MiB in one push (git sends it chunked): built, a new source.
        var noise = [UInt8](repeating: 0, count: 3 << 20)
        for i in noise.indices { noise[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 13) }
        try Data(noise).write(to: URL(fileURLWithPath: work + "/www/noise.bin"))
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "Three megabytes"], in: work)
        let big = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(big.status, 0, big.stderr)
        XCTAssertTrue(big.stderr.contains("queued"), big.stderr)

        // Same tree, new commit: memoised, nothing runs, a new image names the new commit.
        try git(["commit", "-q", "--allow-empty", "-m", "Nothing changed"], in: work)
        let again = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stderr.contains("memoised"), again.stderr)
        XCTAssertFalse(again.stderr.contains("Building on"), again.stderr)

        let list = try images("hello")
        XCTAssertEqual(list.count, 3)
        XCTAssertEqual(list.first?["commit"] as? String, try head(work))
        XCTAssertEqual(list[0]["build"] as? String, list[1]["build"] as? String, "the memoised push reused the build")
        XCTAssertNotEqual(list[0]["image"] as? String, list[1]["image"] as? String, "its image names the new commit")

        // The registry serves it, labelled with the commit, the source and the build.
        let inspect = try sh("/usr/bin/skopeo", ["inspect", "--creds", "kbuild:" + server.token, "--tls-verify=false", "docker://\(server.hostPort)/hello:latest"])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        let labels = (try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any])?["Labels"] as? [String: String] ?? [:]
        XCTAssertEqual(labels["org.opencontainers.image.revision"], try head(work))
        XCTAssertEqual(labels["org.opencontainers.image.source"], "\(server.url)/hello.git")
        XCTAssertEqual(labels["dev.kbuild.build"], list[0]["build"] as? String)
        XCTAssertEqual(labels["dev.kbuild.source"], list[0]["source"] as? String)

        // The build log is in the Keg for good.
        let build = try XCTUnwrap(list[0]["build"] as? String)
        let result = try kb(["ref", "get", "builds/results/" + build.dropFirst(2)])
        XCTAssertEqual(result.status, 0, result.stderr)
        let record = try kb(["keg", "cat", trimmed(result.stdout)])
        XCTAssertEqual(record.status, 0, record.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(record.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(json?["status"] as? String, "succeeded")
        let log = try kb(["keg", "cat", try XCTUnwrap(json?["log"] as? String)])
        XCTAssertTrue(log.stdout.contains("Procfile app detected"), log.stdout)
        let logs = try kb(["logs", String(build.prefix(12))])
        XCTAssertEqual(logs.stdout, log.stdout, "kbuild logs BUILD prints the same")
        let unknown = try kb(["logs", "K-00000000"])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("no build K-00000000 has finished here"), unknown.stderr)

        // Another branch: stored, not built, and said so.
        let feature = try git(["push", "kbuild", "main:feature"], in: work)
        XCTAssertEqual(feature.status, 0, feature.stderr)
        XCTAssertTrue(feature.stderr.contains("Pushed to feature, not main: stored, not built"), feature.stderr)
        XCTAssertEqual(try images("hello").count, 3)

        // gc keeps all of it: the image (through its manifest), the build record and its log (through `links`).
        let gc = try kb(["keg", "gc", "--grace", "0s", "--keep-for", "0s"])
        XCTAssertEqual(gc.status, 0, gc.stderr)
        let image = try XCTUnwrap(list[0]["image"] as? String)
        let exported = try tempDir(self, "hello-export") + "/layout"
        XCTAssertEqual(try kb(["image", "export", image, exported]).status, 0)
        let umoci = try sh("/usr/bin/umoci", ["unpack", "--image", exported + ":latest", exported + "-bundle"])
        XCTAssertEqual(umoci.status, 0, umoci.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: exported + "-bundle/rootfs/app/serve.sh"))
        XCTAssertEqual(try kb(["logs", String(build.prefix(12))]).stdout, log.stdout, "the log survives gc")
        let fsck = try kb(["keg", "fsck"])
        XCTAssertTrue(fsck.stdout.contains(" 0 problems"), fsck.stdout)

        // A clone over the same remote gets the pushed commit back.
        let clone = try tempDir(self, "clone")
        let cloned = try sh("/usr/bin/git", ["-c", "credential.helper=!\(kbuildBinary) git-credential --data-dir \(GitPushTests.data)",
                                             "clone", "-q", "\(server.url)/hello.git", clone + "/c"], env: ["GIT_TERMINAL_PROMPT": "0"])
        XCTAssertEqual(cloned.status, 0, cloned.stderr)
        XCTAssertEqual(try head(clone + "/c"), try head(work))
    }

    func testRefusedBeforeAnythingIsReceived() throws {
        let server = try startKbuildUp(self, data: GitPushTests.data)
        let work = try makeApp("refusals", example: "procfile")

        // No app by that name, and a name that cannot be one: git shows kbuild's reason.
        for (url, why) in [("\(server.url)/nosuchapp.git", "remote error: no app named nosuchapp: create it with `kbuild apps:create nosuchapp`"),
                           ("\(server.url)/Bad_Name.git", "remote error: invalid app name")] {
            let r = try git(["-c", "credential.helper=!\(kbuildBinary) git-credential --data-dir \(GitPushTests.data)", "push", url, "main"], in: work)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains(why), "\(why) in: \(r.stderr)")
        }
        // No credentials, and a wrong token: refused with 401 before any object moves.
        let bare = "\(server.url)/refusals.git"
        let anonymous = try git(["-c", "credential.helper=", "push", bare, "main"], in: work)
        XCTAssertNotEqual(anonymous.status, 0)
        XCTAssertTrue(anonymous.stderr.contains("Authentication failed") || anonymous.stderr.contains("could not read Username"), anonymous.stderr)
        let wrong = try git(["-c", "credential.helper=", "push", bare.replacingOccurrences(of: "http://", with: "http://grace:not-the-token@"), "main"], in: work)
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssertTrue(wrong.stderr.contains("Authentication failed"), wrong.stderr)
        XCTAssertEqual(try images("refusals").count, 0)
        XCTAssertNotEqual(try git(["--git-dir", GitPushTests.data + "/git/refusals.git", "rev-parse", "--verify", "-q", "main"], in: work).status, 0,
                          "nothing was received")

        // An invalid app name on the command line.
        let invalid = try kb(["apps:create", "../evil"])
        XCTAssertNotEqual(invalid.status, 0)
        XCTAssertTrue(invalid.stderr.contains("invalid app name"), invalid.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: GitPushTests.data + "/git/../evil.git"))
        let twice = try kb(["apps:create", "refusals", "--stack", "busybox"])
        XCTAssertTrue(twice.stderr.contains("exists already"), twice.stderr)
        let noStack = try kb(["apps:create", "nostack", "--stack", "nosuch"])
        XCTAssertNotEqual(noStack.status, 0)
        XCTAssertTrue(noStack.stderr.contains("no stack named \"nosuch\""), noStack.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: GitPushTests.data + "/git/nostack.git"))
    }

    /// Each bad push: rejected with a clear message, the branch does not move,
    /// no image is made, and the image of the last good push stays current.
    func testBadPushesAreRejectedAndTheDeployStays() throws {
        _ = try startKbuildUp(self, data: GitPushTests.data)
        let work = try makeApp("badpush", example: "procfile", create: ["--max-file-size", "1M", "--build-timeout", "5s"])
        let good = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(good.status, 0, good.stderr)
        let goodSHA = try head(work)
        let goodImage = try XCTUnwrap(try images("badpush").first?["image"] as? String)

        @discardableResult
        func rejected(_ why: String, _ file: StaticString = #filePath, _ line: UInt = #line) throws -> String {
            let r = try git(["push", "-f", "kbuild", "HEAD:main"], in: work)
            XCTAssertNotEqual(r.status, 0, "pushed: \(r.stderr)", file: file, line: line)
            XCTAssertTrue(r.stderr.contains(why), "\(why) in:\n\(r.stderr)", file: file, line: line)
            XCTAssertTrue(r.stderr.contains("pre-receive hook declined"), r.stderr, file: file, line: line)
            let branch = try git(["--git-dir", GitPushTests.data + "/git/badpush.git", "rev-parse", "main"], in: work)
            XCTAssertEqual(trimmed(branch.stdout), goodSHA, "the branch did not move", file: file, line: line)
            let list = try images("badpush")
            XCTAssertEqual(list.count, 1, file: file, line: line)
            XCTAssertEqual(list.first?["image"] as? String, goodImage, "the deployed image is untouched", file: file, line: line)
            try git(["reset", "-q", "--hard", goodSHA], in: work)
            return r.stderr
        }
        func commit(_ message: String) throws {
            try git(["add", "-A"], in: work)
            try git(["commit", "-q", "-m", message], in: work)
        }

        // A file over the app's limit.
        try Data(repeating: 7, count: 2 << 20).write(to: URL(fileURLWithPath: work + "/www/big.bin"))
        try commit("Too big")
        try rejected("refusing the push: www/big.bin is 2097152 bytes, over the limit of 1048576")

        // A tree with .git/hooks/x, made by hand (git add would never).
        let hookBlob = trimmed(try sh("/usr/bin/git", ["-C", work, "hash-object", "-w", "--stdin"], stdin: Data("#!/bin/sh\nrm -rf /\n".utf8)).stdout)
        let hooks = trimmed(try sh("/usr/bin/git", ["-C", work, "mktree"], stdin: Data("100755 blob \(hookBlob)\tx\n".utf8)).stdout)
        let dotgit = trimmed(try sh("/usr/bin/git", ["-C", work, "mktree"], stdin: Data("040000 tree \(hooks)\thooks\n".utf8)).stdout)
        let current = trimmed(try git(["ls-tree", "HEAD"], in: work).stdout)
        let root = trimmed(try sh("/usr/bin/git", ["-C", work, "mktree"], stdin: Data((current + "\n040000 tree \(dotgit)\t.git\n").utf8)).stdout)
        let evil = trimmed(try git(["commit-tree", root, "-p", "HEAD", "-m", "evil"], in: work).stdout)
        try git(["reset", "-q", "--soft", evil], in: work)
        try rejected("the tree has a .git entry at \".git\"")

        // A symlink that points outside the tree.
        XCTAssertEqual(symlink("../../../etc/shadow", work + "/www/shadow"), 0)
        try commit("Escape")
        try rejected("symlink www/shadow points outside the tree")

        // Nothing any buildpack recognises.
        try git(["rm", "-q", "-r", "Procfile", "serve.sh", "www"], in: work)
        try writeFile(work + "/README", "just words\n")
        try commit("Nothing to build")
        try rejected("no buildpack detected this app (tried python, nodejs, go, static, procfile)")

        // A buildpack (brought in the app, named in .buildpacks) that fails, that hangs, that writes outside its directories.
        for (script, why) in [("echo '-----> Failing on purpose'; exit 3", "bin/compile of app-bp failed: exited with code 3"),
                              ("echo '-----> Hanging'; sleep 600", "did not finish within the build's time limit (5 s)")] {
            try writeFile(work + "/.buildpacks", "./bp\n")
            try writeFile(work + "/bp/bin/detect", "#!/bin/sh\necho Mine\n", mode: 0o755)
            try writeFile(work + "/bp/bin/compile", "#!/bin/sh\n\(script)\n", mode: 0o755)
            try commit("Buildpack: \(why)")
            let output = try rejected(why)
            // The failed build's log is kept, and the rejection says how to read it.
            let build = try XCTUnwrap(output.range(of: "its log: kbuild logs ").map { String(output[$0.upperBound...].prefix(10)) }, output)
            let log = try kb(["logs", build])
            XCTAssertEqual(log.status, 0, log.stderr)
            XCTAssertTrue(log.stdout.contains(script.hasSuffix("exit 3") ? "Failing on purpose" : "Hanging"), log.stdout)
            XCTAssertTrue(log.stdout.contains("Build failed"), log.stdout)
        }
    }

    func testABuildpackCannotWriteOutsideItsDirectories() throws {
        let server = try startKbuildUp(self, data: GitPushTests.data)
        let work = try makeApp("contained", files: [
            ".buildpacks": "./bp\n",
            "Procfile": "web: ./run.sh\n",
            "run.sh": "#!/bin/sh\nexec httpd -f -p $PORT\n",
            "bp/bin/detect": "#!/bin/sh\necho Mine\n",
            "bp/bin/compile": """
                #!/bin/sh
                echo kept > /app/built.txt
                echo cached > /cache/note
                echo stray > /usr/stray.txt
                echo root::0:0::/:/bin/sh >> /etc/passwd
                if touch /buildpacks/app-bp/evil 2>/dev/null; then echo yes; else echo no; fi > /app/buildpack-writable
                if touch /env/evil 2>/dev/null; then echo yes; else echo no; fi > /app/env-writable
                echo '-----> Wrote everywhere it could'
                """,
        ])
        let push = try git(["push", "kbuild", "main"], in: work)
        XCTAssertEqual(push.status, 0, push.stderr)
        let dir = try tempDir(self, "contained-image")
        let copy = try sh("/usr/bin/skopeo", ["copy", "--src-creds", "kbuild:" + server.token, "--src-tls-verify=false",
                                             "docker://\(server.hostPort)/contained:latest", "oci:\(dir)/img:latest"])
        XCTAssertEqual(copy.status, 0, copy.stderr)
        let unpack = try sh("/usr/bin/umoci", ["unpack", "--image", "\(dir)/img:latest", "\(dir)/bundle"])
        XCTAssertEqual(unpack.status, 0, unpack.stderr)
        let rootfs = dir + "/bundle/rootfs"
        XCTAssertEqual(try String(contentsOfFile: rootfs + "/app/built.txt", encoding: .utf8), "kept\n")
        XCTAssertEqual(try String(contentsOfFile: rootfs + "/app/buildpack-writable", encoding: .utf8), "no\n")
        XCTAssertEqual(try String(contentsOfFile: rootfs + "/app/env-writable", encoding: .utf8), "no\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: rootfs + "/usr/stray.txt"), "writes outside /app are not in the image")
        XCTAssertFalse(try String(contentsOfFile: rootfs + "/etc/passwd", encoding: .utf8).contains("root::0:0"))
        // Nor on the host: not in the stack's checkout, nor anywhere under the data dir's trees.
        let stray = try sh("/usr/bin/find", [GitPushTests.data + "/trees", "-name", "stray.txt"])
        XCTAssertEqual(stray.stdout, "")
        // The cache is the app's, kept between builds.
        XCTAssertEqual(try kb(["ref", "get", "apps/contained/build-cache"]).status, 0)
    }

    func testPushOverSSH() throws {
        // sshd from Debian's openssh-server on a free port, with its own host key and config.
        let dir = try tempDir(self, "ssh")
        XCTAssertEqual(try sh("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", dir + "/host_key"]).status, 0)
        XCTAssertEqual(try sh("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "grace@laptop", "-f", dir + "/grace"]).status, 0)
        XCTAssertEqual(try sh("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", dir + "/stranger"]).status, 0)
        let port = 20000 + Int(getpid() % 20000)
        try writeFile(dir + "/sshd_config", """
            Port \(port)
            ListenAddress 127.0.0.1
            HostKey \(dir)/host_key
            AuthorizedKeysFile \(GitPushTests.data)/ssh/authorized_keys
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            StrictModes no
            UsePAM no
            PidFile \(dir)/sshd.pid
            """)
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        // Spawned directly, not with Foundation's Process: its child monitor blocks in
        // wait4 on a long-lived child here and then never reaps the short ones.
        let sshd = try spawnServer("/usr/sbin/sshd", ["-D", "-e", "-f", dir + "/sshd_config"])
        addTeardownBlock { kill(sshd, SIGTERM); var status: Int32 = 0; waitpid(sshd, &status, 0) }
        var up = false
        for _ in 0..<100 where !up {
            up = canConnect(port: port)
            if !up { usleep(50_000) }
        }
        XCTAssertTrue(up, "sshd listens")

        let added = try kb(["keys:add", dir + "/grace.pub"])
        XCTAssertEqual(added.status, 0, added.stderr)
        XCTAssertTrue(added.stdout.contains("as grace"), added.stdout)
        let listed = try kb(["keys"])
        XCTAssertTrue(listed.stdout.hasPrefix("grace  ssh-ed25519  SHA256:"), listed.stdout)
        let duplicate = try kb(["keys:add", dir + "/grace.pub", "--name", "other"])
        XCTAssertTrue(duplicate.stderr.contains("already there, as grace"), duplicate.stderr)
        let notAKey = try kb(["keys:add", dir + "/grace"])
        XCTAssertNotEqual(notAKey.status, 0)
        XCTAssertTrue(notAKey.stderr.contains("failed to read the public key"), notAKey.stderr)

        // No kbuild up: the hook has no control plane to hand the push to, says so, and the branch does not move.
        let work = try makeApp("sshapp", example: "procfile", files: ["www/id.txt": UUID().uuidString], httpRemote: false)
        let ssh = "ssh -i \(dir)/grace -p \(port) -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
        let down = try git(["push", "ssh://root@127.0.0.1:\(port)/sshapp.git", "main"], in: work, env: ["GIT_SSH_COMMAND": ssh])
        XCTAssertNotEqual(down.status, 0)
        XCTAssertTrue(down.stderr.contains("kbuild is not running on \(GitPushTests.data)"), down.stderr)
        // kbuild up with no worker: the push waits in the queue, the pusher is told, and it is built when a worker starts.
        _ = try startKbuildUp(self, data: GitPushTests.data, extra: ["--workers", "0"])
        let pushLog = dir + "/push.log"
        let pushing = try spawnServer("/usr/bin/env", ["GIT_SSH_COMMAND=" + ssh, "git", "-C", work, "push", "ssh://root@127.0.0.1:\(port)/sshapp.git", "main"],
                                      output: pushLog)
        try waitUntil("the pusher is told no worker is connected", timeout: 60) {
            ((try? String(contentsOfFile: pushLog, encoding: .utf8)) ?? "").contains("No build worker has taken build K-")
        }
        let worker = try spawnServer(kbuildBinary, ["worker", "--data-dir", GitPushTests.data], output: dir + "/worker.log")
        addTeardownBlock { kill(worker, SIGTERM); _ = reap(worker) }
        let pushStatus = reap(pushing)
        let pushed = try String(contentsOfFile: pushLog, encoding: .utf8)
        XCTAssertEqual(pushStatus, 0, pushed)
        XCTAssertTrue(pushed.contains("remote: -----> Image K-"), pushed)
        let source = try kb(["ref", "get", "apps/sshapp/source"])
        let record = try kb(["keg", "cat", trimmed(source.stdout)])
        XCTAssertTrue(record.stdout.contains("\"pushedBy\":\"grace\""), record.stdout)

        // A stranger's key, an unknown app, a shell: refused.
        let stranger = try git(["push", "ssh://root@127.0.0.1:\(port)/sshapp.git", "main"], in: work,
                               env: ["GIT_SSH_COMMAND": ssh.replacingOccurrences(of: "/grace", with: "/stranger")])
        XCTAssertNotEqual(stranger.status, 0)
        XCTAssertTrue(stranger.stderr.contains("Permission denied (publickey)"), stranger.stderr)
        let unknown = try git(["push", "ssh://root@127.0.0.1:\(port)/nosuch.git", "main"], in: work, env: ["GIT_SSH_COMMAND": ssh])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("kbuild: no app named \"nosuch\""), unknown.stderr)
        let shell = try sh("/usr/bin/bash", ["-c", "\(ssh) root@127.0.0.1 'cat /etc/shadow'"])
        XCTAssertNotEqual(shell.status, 0)
        XCTAssertTrue(shell.stderr.contains("kbuild only takes git pushes and fetches here"), shell.stderr)
        XCTAssertEqual(shell.stdout, "")

        XCTAssertEqual(try kb(["keys:remove", "grace"]).status, 0)
        XCTAssertEqual(try kb(["keys"]).stdout, "")
    }

    /// A worker killed in the middle of a build: its claim runs out and
    /// another worker takes the build over; the push still succeeds.
    func testAWorkerThatDiesReleasesItsClaim() throws {
        try workerStops(with: SIGKILL, app: "survivor")
    }

    /// A worker stopped gracefully mid-build (SIGTERM, as when `kbuild up` restarts)
    /// records no failure: the push does not fail, the build runs again elsewhere.
    func testAWorkerThatStopsMidBuildFailsNoPush() throws {
        try workerStops(with: SIGTERM, app: "restarted")
    }

    func workerStops(with signal: Int32, app: String) throws {
        // The gateway without a worker of its own, and a worker beside it.
        _ = try startKbuildUp(self, data: GitPushTests.data, extra: ["--workers", "0"])
        let workerLog = try tempDir(self, "worker-log") + "/worker.log"
        let worker = try spawnServer(kbuildBinary, ["worker", "--data-dir", GitPushTests.data], output: workerLog)
        var reaped = false
        addTeardownBlock { if !reaped { kill(worker, SIGKILL); _ = reap(worker) } }
        let work = try makeApp(app, files: [
            ".buildpacks": "./bp\n", "Procfile": "web: httpd -f -p $PORT\n", "id.txt": UUID().uuidString,
            "bp/bin/detect": "#!/bin/sh\necho Slow\n",
            "bp/bin/compile": "#!/bin/sh\necho '-----> Compiling slowly'\nsleep 3\necho '-----> Compiled'\n",
        ])
        let log = try tempDir(self, "\(app)-log") + "/push.log"
        let push = try spawnServer("/usr/bin/git", ["-C", work, "push", "kbuild", "main"], output: log)
        // Wait (bounded) until the worker has claimed the build and the pusher sees it compiling, then stop it.
        var claimed = false
        for _ in 0..<200 where !claimed {
            claimed = !(try kb(["ref", "ls", "builds/claims"]).stdout.isEmpty)
                && ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("Compiling slowly")
            if !claimed { usleep(50_000) }
        }
        XCTAssertTrue(claimed, "the worker claimed the build and started compiling")
        kill(worker, signal)
        let workerStatus = reap(worker)
        reaped = true
        if signal == SIGTERM { XCTAssertEqual(workerStatus, 0, "a graceful stop: \((try? String(contentsOfFile: workerLog, encoding: .utf8)) ?? "")") }
        // Another worker joins and takes the build over once the first one's claim has run out.
        let second = try spawnServer(kbuildBinary, ["worker", "--data-dir", GitPushTests.data, "--name", "second"], output: workerLog + ".2")
        addTeardownBlock { kill(second, SIGTERM); _ = reap(second) }
        let status = reap(push)
        let output = try String(contentsOfFile: log, encoding: .utf8)
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("(the build started again, on second)"), output)
        XCTAssertEqual(output.components(separatedBy: "Compiling slowly").count - 1, 2, "both attempts' logs reached the pusher: \(output)")
        XCTAssertTrue(output.contains("remote: -----> Compiled"), output)
        XCTAssertTrue(output.contains("remote: -----> Image K-"), output)
        XCTAssertFalse(output.contains("Build failed"), output)
        XCTAssertEqual(try kb(["ref", "ls", "builds/claims"]).stdout, "", "no claim is left behind")
        XCTAssertEqual(try images(app).count, 1)
        let liveLogs = (try? FileManager.default.contentsOfDirectory(atPath: GitPushTests.data + "/builds/logs")) ?? []
        XCTAssertEqual(liveLogs, [], "no live log is left behind, the dead worker's neither")
    }

    /// The same commit pushed to two kbuild installations gives the same
    /// source, build and image KIDs: images are reproducible.
    func testTheSameCommitGivesTheSameImageAnywhere() throws {
        let port = freePort()
        let work = try makeApp("repro", files: ["Procfile": "web: httpd -f -p $PORT -h /app/www\n", "www/index.html": "same everywhere\n"],
                               httpRemote: false)
        var results: [[String: Any]] = []
        let other = try tempDir(self, "repro-other") + "/data"
        for data in [GitPushTests.data, other] {
            if data == other {
                XCTAssertEqual(try kbuild(["stack", "create", "busybox"], dataDir: other).status, 0)
                XCTAssertEqual(try kbuild(["apps:create", "repro", "--stack", "busybox"], dataDir: other).status, 0)
            }
            let server = try startKbuildUp(self, data: data, port: port)
            let push = try git(["-c", "credential.helper=!\(kbuildBinary) git-credential --data-dir \(data)", "push", "\(server.url)/repro.git", "main"], in: work)
            XCTAssertEqual(push.status, 0, push.stderr)
            kill(server.process.processIdentifier, SIGTERM)
            server.process.waitUntilExit()
            let list = try kbuild(["image", "ls", "repro", "--json"], dataDir: data)
            results.append(try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]])?.first))
        }
        for key in ["image", "build", "source", "commit"] {
            XCTAssertEqual(results[0][key] as? String, results[1][key] as? String, key)
        }
    }
}
