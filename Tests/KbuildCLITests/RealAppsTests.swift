import Foundation
import XCTest

/// The apps people push, on the Debian stack (its run and build images, made
/// once for the test run): real pip, npm and go in real builds, each bad
/// input refused with what runs left running. Python packages come from a
/// package index this test serves itself in a network namespace of its own
/// (which builds reach as they reach the outside), and, where this host
/// reaches PyPI, from PyPI.
final class RealAppsTests: XCTestCase {
    var data: String { SharedStacks.data }

    override func setUpWithError() throws {
        let created = try XCTUnwrap(SharedStacks.debian, "kbuild stack create debian did not run")
        XCTAssertEqual(created.status, 0, "stack create debian: \(created.stderr)")
    }

    /// A new app on the Debian stack, its work tree holding `example` (a folder of examples/) and `files`, committed, with a remote.
    func app(_ name: String, example: String? = nil, files: [String: String] = [:]) throws -> String {
        let created = try kbuild(["apps:create", name], dataDir: data)
        XCTAssertEqual(created.status, 0, created.stderr)
        // The data dir is shared by the tests: each destroys its apps (before its kbuild up stops), so
        // their processes do not take the node's CPUs from the next test's.
        let data = self.data
        addTeardownBlock { _ = try? sh(kbuildBinary, ["apps:destroy", name, "--confirm", name], env: ["KBUILD_DATA_DIR": data]) }
        XCTAssertTrue(created.stdout.contains("stack debian-13"), created.stdout)
        let work = try tempDir(self, name)
        if let example { XCTAssertEqual(try sh("/bin/cp", ["-a", "\(repositoryRoot)/examples/\(example)/.", work]).status, 0) }
        try write(files, in: work)
        try git(["init", "-q", "-b", "main"], in: work)
        try git(["add", "-A"], in: work)
        try git(["commit", "-q", "-m", "First"], in: work)
        XCTAssertEqual(try sh(kbuildBinary, ["git:remote", name, "--data-dir", data], cwd: work).status, 0)
        return work
    }

    func write(_ files: [String: String], in work: String) throws {
        for (path, text) in files { try writeFile(work + "/" + path, text, mode: path.contains("bin/") ? 0o755 : 0o644) }
    }

    /// Commits `files` (a nil text removes the file) and pushes.
    func push(_ work: String, _ files: [String: String?] = [:], message: String = "change") throws -> Result {
        for (path, text) in files {
            if let text { try writeFile(work + "/" + path, text, mode: path.contains("bin/") ? 0o755 : 0o644) } else { try? FileManager.default.removeItem(atPath: work + "/" + path) }
        }
        if !files.isEmpty {
            try git(["add", "-A"], in: work)
            try git(["commit", "-q", "-m", message], in: work)
        }
        return try git(["push", "kbuild", "HEAD:main"], in: work)
    }

    /// A push that must be refused with `message`, leaving `app` serving `serving`; the commit is then undone.
    func refused(_ work: String, _ files: [String: String?], _ message: String, app: String, routerPort: Int, serving: String,
                 file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try push(work, files, message: "bad: \(message)")
        XCTAssertNotEqual(r.status, 0, "pushed: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(message), "want \(message.debugDescription) in: \(r.stderr)", file: file, line: line)
        let served = routed(routerPort, host: "\(app).localhost")
        XCTAssertEqual(served.status, 200, "what ran stopped after a refused push", file: file, line: line)
        XCTAssertTrue(served.body.contains(serving), served.body, file: file, line: line)
        try git(["reset", "-q", "--hard", "HEAD~1"], in: work)
    }

    func layerReused(_ log: String) -> String? {
        guard let range = log.range(of: "Dependencies: layer ") else { return nil }
        return String(log[range.upperBound...].prefix { !$0.isWhitespace })
    }

    func layerMade(_ log: String) -> String? {
        guard log.contains("Dependencies: installing"), let range = log.range(of: "Layer K-") else { return nil }
        return "K-" + String(log[range.upperBound...].prefix { !$0.isWhitespace })
    }

    // MARK: Python from a package index served here

    func testPythonFromAPackageIndexWithACExtensionAndEachBadInput() throws {
        let index = try LocalIndex.start(self)
        let routerPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        let requirements = "--no-index\n--find-links \(index.url)\n--trusted-host \(index.host)\nflask==3.1.3\ngunicorn==23.0.0\ncext==1.0\n"
        let work = try app("pyidx", files: [
            "app.py": "import cext\nfrom flask import Flask\napp = Flask(__name__)\n\n@app.route('/')\ndef index():\n    return f'answer {cext.answer()}\\n'\n",
            "requirements.txt": requirements,
            "Procfile": "web: gunicorn --bind [::]:$PORT app:app\n",
            ".python-version": "3.13\n",
        ])
        let first = try push(work)
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertTrue(first.stderr.contains("Installing requirements.txt with pip"), first.stderr)
        XCTAssertTrue(first.stderr.contains("Building wheel for cext"), "the C extension is compiled on the build image: \(first.stderr)")
        XCTAssertNotNil(layerMade(first.stderr), first.stderr)
        XCTAssertTrue(first.stderr.contains("v1 is live"), first.stderr)
        if !first.stderr.contains("v1 is live") { print(try kbuild(["logs", "pyidx", "--lines", "40"], dataDir: data).stdout) }
        try waitUntil("pyidx serves") { routed(routerPort, host: "pyidx.localhost").body == "answer 42\n" }
        // The run image has no compiler: the image ships the built extension, not gcc.
        let gcc = try sh(kbuildBinary, ["run", "pyidx", "--", "sh", "-c", "command -v gcc || echo no-gcc; python3 -c 'import cext; print(cext.answer())'"],
                         env: ["KBUILD_DATA_DIR": data])
        XCTAssertTrue(gcc.stdout.contains("no-gcc") && gcc.stdout.contains("42"), gcc.stdout + gcc.stderr)

        // Each bad input: refused, naming what was wrong; pyidx keeps serving.
        let serving = "answer 42"
        try refused(work, ["requirements.txt": requirements + "no-such-package-kbuild==1.0\n"],
                    "No matching distribution found for no-such-package-kbuild", app: "pyidx", routerPort: routerPort, serving: serving)
        try refused(work, ["requirements.txt": requirements + "flask=>>3\n"], "Invalid requirement", app: "pyidx", routerPort: routerPort, serving: serving)
        try refused(work, ["requirements.txt": try index.hashedRequirements(wrong: "flask")], "THESE PACKAGES DO NOT MATCH THE HASHES",
                    app: "pyidx", routerPort: routerPort, serving: serving)
        try refused(work, ["requirements.txt": "--index-url http://no-such-host.invalid/simple/\nsix\n"], "no-such-host.invalid",
                    app: "pyidx", routerPort: routerPort, serving: serving)
        try refused(work, [".python-version": "3.9\n"], "asks for Python 3.9, but the stack debian-13 has Python 3.13",
                    app: "pyidx", routerPort: routerPort, serving: serving)
        // The hashes right: it builds.
        let hashed = try push(work, ["requirements.txt": try index.hashedRequirements(wrong: nil)], message: "hashed")
        XCTAssertEqual(hashed.status, 0, hashed.stderr)

        // A build cache left corrupt (every file of pip's cache overwritten by a buildpack that runs first) does not fail a build.
        let corrupt = try push(work, [
            ".buildpacks": "./corrupt\npython\n",
            "corrupt/bin/detect": "#!/bin/sh\nexit 0\n",
            "corrupt/bin/compile": "#!/bin/sh\nn=0\nfor f in $(find \"$2/pip\" -type f 2>/dev/null); do echo garbage > \"$f\"; n=$((n+1)); done\necho \"       corrupted $n files of the pip cache\"\n",
            "requirements.txt": requirements + "# changed, so the dependencies are installed again\n",
        ], message: "corrupt the cache")
        XCTAssertEqual(corrupt.status, 0, corrupt.stderr)
        XCTAssertTrue(corrupt.stderr.contains("Dependencies: installing"), corrupt.stderr)
        XCTAssertFalse(corrupt.stderr.contains("corrupted 0 files"), "the cache held pip's files to corrupt: \(corrupt.stderr)")
        try waitUntil("pyidx serves after the corrupt-cache build") { routed(routerPort, host: "pyidx.localhost").body == "answer 42\n" }
    }

    // MARK: Flask and Django from PyPI, and the dependency layers

    func testFlaskExampleFromPyPIReusesItsDependencyLayerAcrossPushesAndApps() throws {
        try XCTSkipUnless(LocalIndex.hostReachesPyPI, "this host cannot reach PyPI itself")
        let routerPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        let work = try app("flask", example: "flask")
        let first = try push(work)
        XCTAssertEqual(first.status, 0, first.stderr)
        let layer = try XCTUnwrap(layerMade(first.stderr), first.stderr)
        try waitUntil("flask serves") { routed(routerPort, host: "flask.localhost").body.hasPrefix("hello from flask") }
        // The same tree again, now that the app has a build cache: the first build (from an empty cache) is reused.
        try git(["commit", "-q", "--allow-empty", "-m", "nothing changed"], in: work)
        let again0 = try push(work)
        XCTAssertEqual(again0.status, 0, again0.stderr)
        XCTAssertTrue(again0.stderr.contains("memoised"), again0.stderr)

        // A code-only change: nothing installed, the same layer, live at once.
        let started = Date()
        let code = try push(work, ["app.py": try String(contentsOfFile: work + "/app.py", encoding: .utf8).replacingOccurrences(of: "hello from flask", with: "hello again from flask")])
        XCTAssertEqual(code.status, 0, code.stderr)
        XCTAssertEqual(layerReused(code.stderr), layer, code.stderr)
        XCTAssertFalse(code.stderr.contains("Installing requirements.txt"), code.stderr)
        XCTAssertEqual(routed(routerPort, host: "flask.localhost").body.hasPrefix("hello again from flask"), true)
        print("code-only push to all traffic on the new version: \(String(format: "%.2f", Date().timeIntervalSince(started))) s")

        // Another app with the same requirements: the same layer, and its log names no other app.
        let other = try app("flask-two", example: "flask", files: ["app.py": "from flask import Flask\napp = Flask(__name__)\n\n@app.route('/')\ndef index():\n    return 'two\\n'\n"])
        let second = try push(other)
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertEqual(layerReused(second.stderr), layer, second.stderr)
        XCTAssertFalse(second.stderr.contains("flask "), "the shared layer does not name the app that made it: \(second.stderr)")

        // builds:cache:purge: the next push builds anew, even the same tree.
        let purge = try kbuild(["builds:cache:purge", "flask"], dataDir: data)
        XCTAssertEqual(purge.status, 0, purge.stderr)
        let again = try push(work, [".kbuild-rebuild": "1\n"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stderr.contains("Dependencies: installing"), again.stderr)
        XCTAssertTrue(try kbuild(["builds:cache:purge", "nosuchapp"], dataDir: data).stderr.contains("no app named"))
    }

    func testDjangoExampleCollectsItsStaticFiles() throws {
        try XCTSkipUnless(LocalIndex.hostReachesPyPI, "this host cannot reach PyPI itself")
        let routerPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        let work = try app("django", example: "django")
        let r = try push(work)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("Running manage.py collectstatic"), r.stderr)
        var page = ""
        try waitUntil("django serves") { page = routed(routerPort, host: "django.localhost").body; return page.hasPrefix("hello from django") }
        // The hashed name whitenoise's manifest gave the stylesheet, served from the image.
        let path = try XCTUnwrap(page.split(separator: " ").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }, page)
        XCTAssertTrue(path.hasPrefix("/static/site.") && path.hasSuffix(".css"), path)
        let css = routed(routerPort, host: "django.localhost", path: path)
        XCTAssertEqual(css.status, 200)
        XCTAssertTrue(css.body.contains("font-family"), css.body)
    }

    // MARK: Node.js and Go

    /// A git URL in `.buildpacks`: cloned in a sandbox with the build's network
    /// (from a server this test runs outside the host's reach), once per app,
    /// again after `builds:cache:purge`; URLs a build may not use are refused,
    /// and one that points at the host cannot reach it.
    func testAGitBuildpackNamedInDotBuildpacksIsClonedInTheBuildNetworkOnce() throws {
        let served = try tempDir(self, "git-served")
        let pack = try tempDir(self, "git-pack")
        try writeFile(pack + "/bin/detect", "#!/bin/sh\necho greeter\n", mode: 0o755)
        try writeFile(pack + "/bin/compile", "#!/bin/sh\nset -e\nmkdir -p \"$1/bin\"\nprintf '#!/bin/sh\\nexec python3 -m http.server \"$PORT\" --directory /app/www\\n' > \"$1/bin/serve\"\nchmod +x \"$1/bin/serve\"\nmkdir -p \"$1/www\"\necho 'served by a git buildpack' > \"$1/www/index.html\"\n", mode: 0o755)
        try writeFile(pack + "/bin/release", "#!/bin/sh\necho '---'\necho 'default_process_types:'\necho '  web: bin/serve'\n", mode: 0o755)
        try git(["init", "-q", "-b", "main"], in: pack)
        try git(["add", "-A"], in: pack)
        try git(["commit", "-q", "-m", "pack"], in: pack)
        try git(["tag", "v1"], in: pack)
        XCTAssertEqual(try sh("/usr/bin/git", ["clone", "-q", "--bare", pack, served + "/greeter.git"]).status, 0)
        XCTAssertEqual(try sh("/usr/bin/git", ["-C", served + "/greeter.git", "update-server-info"]).status, 0)
        let server = try LocalIndex.start(self, serving: served)
        let routerPort = freePort(), apiPort = freePort()
        _ = try startKbuildUp(self, data: data, port: apiPort, extra: ["--router-port", String(routerPort)])

        let url = server.url + "greeter.git"
        let work = try app("gitpack", files: [".buildpacks": "\(url)#v1\n", "README": "static\n"])
        let first = try push(work)
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertTrue(first.stderr.contains("Buildpack \(url)#v1: cloning it for this app (once)"), first.stderr)
        XCTAssertTrue(first.stderr.contains("git-greeter"), first.stderr)
        try waitUntil("the git buildpack's app serves") { routed(routerPort, host: "gitpack.localhost").body == "served by a git buildpack\n" }
        let second = try push(work, ["README": "changed\n"])
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertFalse(second.stderr.contains("cloning it"), "cloned once: \(second.stderr)")
        let purged = try kbuild(["builds:cache:purge", "gitpack"], dataDir: data)
        XCTAssertTrue(purged.stdout.contains("1 git buildpack"), purged.stdout + purged.stderr)
        let third = try push(work, ["README": "again\n"])
        XCTAssertEqual(third.status, 0, third.stderr)
        XCTAssertTrue(third.stderr.contains("cloning it"), "cloned again after a purge: \(third.stderr)")

        // Bad input: each refused with what runs left running.
        let serving = "served by a git buildpack"
        try refused(work, [".buildpacks": "file:///etc#v1\n"], "file:// is not a scheme a build may clone", app: "gitpack", routerPort: routerPort, serving: serving)
        try refused(work, [".buildpacks": "https://user:secret@example.com/x.git\n"], "no credentials", app: "gitpack", routerPort: routerPort, serving: serving)
        try refused(work, [".buildpacks": "\(url)#--upload-pack=touch\n"], "is not a branch or tag name", app: "gitpack", routerPort: routerPort, serving: serving)
        try refused(work, [".buildpacks": "\(url)#v9\n"], "failed to clone the buildpack \(url)#v9", app: "gitpack", routerPort: routerPort, serving: serving)
        try refused(work, [".buildpacks": server.url + "nothing.git\n"], "failed to clone the buildpack", app: "gitpack", routerPort: routerPort, serving: serving)
        // The host: its loopback and its own address, where kbuild's API listens, are out of reach.
        try refused(work, [".buildpacks": "http://127.0.0.1:\(apiPort)/x.git\n"], "failed to clone the buildpack http://127.0.0.1:\(apiPort)/x.git",
                    app: "gitpack", routerPort: routerPort, serving: serving)
        let host = try hostAddress()
        try refused(work, [".buildpacks": "http://\(host):\(apiPort)/x.git\n"], "failed to clone the buildpack http://\(host):\(apiPort)/x.git",
                    app: "gitpack", routerPort: routerPort, serving: serving)
        // Not a buildpack.
        let plain = try tempDir(self, "git-plain")
        try writeFile(plain + "/README", "no bin here\n")
        try git(["init", "-q", "-b", "main"], in: plain)
        try git(["add", "-A"], in: plain)
        try git(["commit", "-q", "-m", "plain"], in: plain)
        XCTAssertEqual(try sh("/usr/bin/git", ["clone", "-q", "--bare", plain, served + "/plain.git"]).status, 0)
        XCTAssertEqual(try sh("/usr/bin/git", ["-C", served + "/plain.git", "update-server-info"]).status, 0)
        try refused(work, [".buildpacks": server.url + "plain.git\n"], "bin/detect", app: "gitpack", routerPort: routerPort, serving: serving)
        // An app whose builds have no network cannot clone.
        XCTAssertEqual(try kbuild(["apps:set", "gitpack", "build-network=none"], dataDir: data).status, 0)
        try refused(work, [".buildpacks": "\(url)#v2\n"], "this app's builds have no network", app: "gitpack", routerPort: routerPort, serving: serving)
    }

    func testNodeAndGoAppsAndTheirBadInputs() throws {
        let routerPort = freePort()
        _ = try startKbuildUp(self, data: data, extra: ["--router-port", String(routerPort)])
        // Node without dependencies, from the example.
        let node = try app("node", example: "node")
        let n = try push(node)
        XCTAssertEqual(n.status, 0, n.stderr)
        XCTAssertTrue(n.stderr.contains("Node.js app detected"), n.stderr)
        try waitUntil("node serves") { routed(routerPort, host: "node.localhost").body.hasPrefix("hello from node v20") }
        let serving = "hello from node"
        try refused(node, ["package.json": "{ \"name\": \"broken\", }"], "package.json is not valid JSON", app: "node", routerPort: routerPort, serving: serving)
        try refused(node, ["package.json": #"{"name":"kbuild-node-example","version":"1.0.0","dependencies":{"left-pad":"1.3.0"},"scripts":{"start":"node server.js"}}"#],
                    "package-lock.json is out of step with package.json: dependencies.left-pad", app: "node", routerPort: routerPort, serving: serving)
        try refused(node, ["package.json": #"{"name":"x","engines":{"node":">=99"},"scripts":{"start":"node server.js"}}"#],
                    "asks for Node.js >=99, but the stack debian-13 has Node.js 20", app: "node", routerPort: routerPort, serving: serving)

        // A local `file:` package with its lock: a dependency layer of its own, then reused.
        let local = try app("node-local", files: [
            "package.json": #"{"name":"withlocal","version":"1.0.0","dependencies":{"greet":"file:lib/greet"},"scripts":{"start":"node server.js"}}"#,
            "package-lock.json": #"{"name":"withlocal","version":"1.0.0","lockfileVersion":3,"requires":true,"packages":{"":{"name":"withlocal","version":"1.0.0","dependencies":{"greet":"file:lib/greet"}},"lib/greet":{"name":"greet","version":"1.0.0"},"node_modules/greet":{"resolved":"lib/greet","link":true}}}"#,
            "lib/greet/package.json": #"{"name":"greet","version":"1.0.0","main":"index.js"}"#,
            "lib/greet/index.js": "module.exports = (who) => `hello ${who} from a local package`;\n",
            "server.js": "require('http').createServer((q, s) => s.end(require('greet')('node') + '\\n')).listen(process.env.PORT);\n",
        ])
        let l = try push(local)
        XCTAssertEqual(l.status, 0, l.stderr)
        XCTAssertNotNil(layerMade(l.stderr), l.stderr)
        XCTAssertTrue(l.stderr.contains("v1 is live"), l.stderr)
        if !l.stderr.contains("v1 is live") { print(try kbuild(["logs", "node-local", "--lines", "40"], dataDir: data).stdout) }
        try waitUntil("node-local serves") { routed(routerPort, host: "node-local.localhost").body == "hello node from a local package\n" }
        let code = try push(local, ["server.js": "require('http').createServer((q, s) => s.end(require('greet')('again') + '\\n')).listen(process.env.PORT);\n"])
        XCTAssertEqual(code.status, 0, code.stderr)
        XCTAssertNotNil(layerReused(code.stderr), code.stderr)

        // Go without dependencies (the example), and with vendored ones.
        let go = try app("go", example: "go")
        let g = try push(go)
        XCTAssertEqual(g.status, 0, g.stderr)
        try waitUntil("go serves") { routed(routerPort, host: "go.localhost").body.hasPrefix("hello from go go1.") }
        let noGo = try sh(kbuildBinary, ["run", "go", "--", "sh", "-c", "command -v go || echo no-go"], env: ["KBUILD_DATA_DIR": data])
        XCTAssertTrue(noGo.stdout.contains("no-go"), "Go is in the build image only: \(noGo.stdout) \(noGo.stderr)")
        try refused(go, ["main.go": "package main\n\nfunc main() { this is not go }\n"], "go build failed", app: "go", routerPort: routerPort, serving: "hello from go")
        try refused(go, ["go.mod": "module example.com/hello\n\ngo 1.99\n"], "go.mod asks for Go 1.99, but the stack debian-13 has Go 1.24",
                    app: "go", routerPort: routerPort, serving: "hello from go")
        let vendored = try app("go-vendored", files: [
            "go.mod": "module example.com/vended\n\ngo 1.22\n\nrequire example.com/greet v1.0.0\n",
            "vendor/modules.txt": "# example.com/greet v1.0.0\n## explicit\nexample.com/greet\n",
            "vendor/example.com/greet/greet.go": "package greet\n\nfunc Hello() string { return \"hello from a vendored module\" }\n",
            "main.go": "package main\n\nimport (\n\t\"fmt\"\n\t\"net/http\"\n\t\"os\"\n\n\t\"example.com/greet\"\n)\n\nfunc main() {\n\thttp.HandleFunc(\"/\", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, greet.Hello()) })\n\thttp.ListenAndServe(\":\"+os.Getenv(\"PORT\"), nil)\n}\n",
        ])
        let v = try push(vendored)
        XCTAssertEqual(v.status, 0, v.stderr)
        XCTAssertTrue(v.stderr.contains("-mod=vendor"), v.stderr)
        try waitUntil("go-vendored serves") { routed(routerPort, host: "go-vendored.localhost").body == "hello from a vendored module\n" }
    }
}

/// A package index for builds: wheels downloaded once from PyPI (plus a C
/// extension's sdist made here), served by python's http.server inside a
/// network namespace this test makes, which builds reach through their NAT.
struct LocalIndex {
    let url: String
    let directory: String
    let host = "192.168.251.2"

    static let hostReachesPyPI: Bool =
        (try? sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "https://pypi.org/simple/six/"]))?.stdout == "200"

    /// The wheels, kept across test runs on this machine.
    static let wheels: Swift.Result<String, any Error> = Swift.Result {
        let dir = "/var/tmp/kbuild-test-wheels"
        if !FileManager.default.fileExists(atPath: dir + "/cext-1.0.tar.gz") {
            try? FileManager.default.removeItem(atPath: dir)
            let r = try sh("/usr/bin/python3", ["-m", "pip", "download", "-q", "-d", dir, "--only-binary=:all:", "--python-version", "3.13",
                                                "--platform", "manylinux2014_x86_64", "flask==3.1.3", "gunicorn==23.0.0", "setuptools", "wheel"])
            guard r.status == 0 else { throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "pip download: \(r.stderr)"]) }
            // A C extension, as an sdist: pip compiles it on the build image.
            let src = NSTemporaryDirectory() + "cext-\(getpid())/cext-1.0"
            try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
            try writeFile(src + "/setup.py", "from setuptools import Extension, setup\nsetup(name='cext', version='1.0', ext_modules=[Extension('cext', ['cext.c'])])\n")
            try writeFile(src + "/PKG-INFO", "Metadata-Version: 2.1\nName: cext\nVersion: 1.0\n")
            try writeFile(src + "/cext.c", """
                #include <Python.h>
                static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
                static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
                static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "cext", NULL, -1, methods};
                PyMODINIT_FUNC PyInit_cext(void) { return PyModule_Create(&module); }

                """)
            let tar = try sh("/bin/tar", ["-czf", dir + "/cext-1.0.tar.gz", "-C", (src as NSString).deletingLastPathComponent, "cext-1.0"])
            guard tar.status == 0 else { throw CocoaError(.fileWriteUnknown) }
        }
        return dir
    }

    /// Starts the index in a namespace of its own (192.168.251.x/30), removed at teardown.
    /// Starts the index (or, with `serving`, a plain HTTP server of that directory).
    static func start(_ test: XCTestCase, serving: String? = nil) throws -> LocalIndex {
        guard serving != nil || hostReachesPyPI || FileManager.default.fileExists(atPath: "/var/tmp/kbuild-test-wheels/cext-1.0.tar.gz") else {
            throw XCTSkip("no wheels here and this host cannot reach PyPI to download them")
        }
        let directory = try serving ?? wheels.get()
        let tag = String(getpid() % 10000)
        let ns = "kbt-index-\(tag)", hostSide = "kbti\(tag)"
        _ = try? sh("/usr/sbin/ip", ["netns", "del", ns])
        _ = try? sh("/usr/sbin/ip", ["link", "del", hostSide])
        for args in [["netns", "add", ns], ["link", "add", hostSide, "type", "veth", "peer", "name", "eth0", "netns", ns],
                     ["addr", "add", "192.168.251.1/30", "dev", hostSide], ["link", "set", hostSide, "up"],
                     ["-n", ns, "addr", "add", "192.168.251.2/30", "dev", "eth0"], ["-n", ns, "link", "set", "eth0", "up"],
                     ["-n", ns, "link", "set", "lo", "up"]] {
            // No default route: builds reach it masqueraded as 192.168.251.1, on the link (with one, this kernel
            // refused connections to it for about 10 s after it was made).
            let r = try sh("/usr/sbin/ip", args)
            guard r.status == 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "ip \(args): \(r.stderr)"]) }
        }
        let port = 8000 + Int(tag)! % 1000
        let log = NSTemporaryDirectory() + "kbuild-index-\(tag).log"
        let server = try spawnServer("/usr/sbin/ip", ["netns", "exec", ns, "/usr/bin/python3", "-m", "http.server", String(port),
                                                      "--bind", "192.168.251.2", "--directory", directory], output: log)
        test.addTeardownBlock {
            kill(server, SIGKILL)
            _ = reap(server)
            try? FileManager.default.removeItem(atPath: log)
            _ = try? sh("/usr/sbin/ip", ["netns", "del", ns])
            _ = try? sh("/usr/sbin/ip", ["link", "del", hostSide])
        }
        let url = "http://192.168.251.2:\(port)/"
        let deadline = Date().addingTimeInterval(10)
        while (try? sh("/usr/bin/curl", ["-s", "-o", "/dev/null", "--max-time", "1", url]))?.status != 0 {
            guard Date() < deadline else {
                let said = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "") + ((try? sh("/usr/sbin/ip", ["-n", ns, "addr"]).stdout) ?? "")
                    + ((try? sh("/usr/bin/curl", ["-sv", "--max-time", "2", url]).stderr) ?? "") + ((try? sh("/usr/sbin/ip", ["netns", "exec", ns, "ss", "-ltnp"]).stdout) ?? "")
                throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "the index did not start: \(said)"])
            }
            usleep(100_000)
        }
        return LocalIndex(url: url, directory: directory)
    }

    /// requirements.txt in --require-hashes form for every wheel here but the build tools, one hash wrong for `wrong`.
    func hashedRequirements(wrong: String?) throws -> String {
        var lines = ["--no-index", "--find-links \(url)", "--trusted-host \(host)"]
        for file in try FileManager.default.contentsOfDirectory(atPath: directory).sorted() where file.hasSuffix(".whl") {
            let parts = file.split(separator: "-")
            let name = parts[0].lowercased().replacingOccurrences(of: "_", with: "-")
            guard !["setuptools", "wheel"].contains(name) else { continue }
            let sum = try sh("/usr/bin/sha256sum", [directory + "/" + file]).stdout.prefix(64)
            lines.append("\(name)==\(parts[1]) --hash=sha256:\(name == wrong ? String(repeating: "0", count: 64) : String(sum))")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

