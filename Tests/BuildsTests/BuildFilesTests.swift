import Builds
import GitGateway
import KbuildCore
import XCTest
import KbuildState

/// The pure parts of the build and the gateway, as tables: Procfile,
/// bin/release YAML, .buildpacks, SSH forced commands, public keys, app names.
final class BuildFilesTests: XCTestCase {
    func testProcfile() throws {
        let parsed = try BuildFiles.parseProcfile("# comment\nweb: python3 app.py --port $PORT\r\n\nworker:   ./run.sh  \n")
        XCTAssertEqual(parsed.map(\.type), ["web", "worker"])
        XCTAssertEqual(parsed.map(\.command), ["python3 app.py --port $PORT", "./run.sh"])
        for (bad, why) in [("web python3", "want `type: command`"), ("w eb: x", "process type"), ("web:", "has no command"),
                           ("web: a\nweb: b", "defined twice"), (": x", "process type")] {
            XCTAssertThrowsError(try BuildFiles.parseProcfile(bad), bad) { error in
                XCTAssertTrue("\(error)".contains(why), "\(bad): \(error)")
            }
        }
    }

    func testRelease() throws {
        let release = try BuildFiles.parseRelease("""
            ---
            addons: []
            config_vars:
              PYTHONPATH: /app/.kbuild/python
              QUOTED: "a b"
            default_process_types:
              web: python3 app.py
              worker: 'python3 worker.py'
            """)
        XCTAssertEqual(release.configVars, ["PYTHONPATH": "/app/.kbuild/python", "QUOTED": "a b"])
        XCTAssertEqual(release.processTypes, ["web": "python3 app.py", "worker": "python3 worker.py"])
        XCTAssertEqual(try BuildFiles.parseRelease("---\n"), BuildFiles.Release())
        XCTAssertEqual(try BuildFiles.parseRelease("default_process_types: {}\n"), BuildFiles.Release())
        // What Heroku's own buildpacks print.
        XCTAssertEqual(try BuildFiles.parseRelease("--- {}\n"), BuildFiles.Release())
        XCTAssertEqual(try BuildFiles.parseRelease(""), BuildFiles.Release())
        XCTAssertEqual(try BuildFiles.parseRelease("---\naddons:\n  - heroku-postgresql\ndefault_process_types:\n  web: gunicorn -b 0.0.0.0:$PORT app:app\n"),
                       BuildFiles.Release(configVars: [:], processTypes: ["web": "gunicorn -b 0.0.0.0:$PORT app:app"]))
        XCTAssertEqual(try BuildFiles.parseRelease("---\nconfig_vars: {PYTHONUNBUFFERED: 1, DEBUG: false, RATIO: 1.50}\ndefault_process_types: ~\n").configVars,
                       ["PYTHONUNBUFFERED": "1", "DEBUG": "false", "RATIO": "1.50"], "scalars as written")
        XCTAssertEqual(try BuildFiles.parseRelease("config_vars:\n  LONG: >-\n    one\n    two\n").configVars, ["LONG": "one two"])
        for (bad, message) in [("config_vars:\n  1BAD: x\n", "is not an environment variable name"), ("config_vars: x\n", "must be a map"),
                               ("default_process_types:\n  web:\n", "want `type: command`"), ("just words\n", "the top level must be a map"),
                               ("config_vars: [unclosed\n", "not YAML"), ("config_vars:\n  A: [1, 2]\n", "a plain value each"),
                               ("- a\n- b\n", "the top level must be a map")] {
            XCTAssertThrowsError(try BuildFiles.parseRelease(bad), bad) { error in
                XCTAssertTrue("\(error)".contains(message), "\(bad.debugDescription): \(error)")
            }
        }
    }

    func testBuildpacksFile() throws {
        XCTAssertEqual(try BuildFiles.parseBuildpacksFile("# mine first\n./buildpacks/mine\n\npython\n"),
                       [.inTree(path: ["buildpacks", "mine"]), .named("python")])
        for bad in ["", "# nothing\n", "../outside\n", "./a/../../b\n", "/abs/path\n", "./.git/hooks\n", "Not A Name\n"] {
            XCTAssertThrowsError(try BuildFiles.parseBuildpacksFile(bad), bad)
        }
        // Git URLs, as Heroku's .buildpacks names them.
        XCTAssertEqual(try BuildFiles.parseBuildpacksFile("https://github.com/heroku/heroku-buildpack-python.git#v280\npython\nhttp://10.1.2.3:8080/p.git\n"),
                       [.git(url: "https://github.com/heroku/heroku-buildpack-python.git", ref: "v280"), .named("python"),
                        .git(url: "http://10.1.2.3:8080/p.git", ref: nil)])
        XCTAssertEqual(try BuildFiles.parseBuildpacksFile("git://example.com/a.git#release/1.x\n"), [.git(url: "git://example.com/a.git", ref: "release/1.x")])
        let refusals = [
            "file:///etc/x.git\n": "file:// is not a scheme",
            "ssh://git@example.com/x.git\n": "ssh:// is not a scheme",
            "ext::sh -c touch% /tmp/x\n": "a path must start with ./",
            "https://user:pw@example.com/x.git\n": "no credentials",
            "https:///nohost.git\n": "no credentials",
            "https://example.com/x.git#-u\n": "is not a branch or tag name",
            "https://example.com/x.git#a..b\n": "is not a branch or tag name",
            "https://example.com/x.git#\n": "is not a branch or tag name",
            "https://example.com/x.git#a b\n": "is not a branch or tag name",
        ]
        for (bad, message) in refusals {
            XCTAssertThrowsError(try BuildFiles.parseBuildpacksFile(bad), bad) { error in
                XCTAssertTrue((error as? KbuildError)?.message.contains(message) ?? false, "\(bad): \(error)")
            }
        }
    }

    func testGitShellCommands() throws {
        let table: [(String, GitShell.Service, String)] = [
            ("git-receive-pack 'web.git'", .receivePack, "web"),
            ("git-receive-pack '/web.git'", .receivePack, "web"),
            ("git-upload-pack 'web'", .uploadPack, "web"),
            ("git receive-pack '~/my-app.git/'", .receivePack, "my-app"),
        ]
        for (command, service, app) in table {
            let parsed = try GitShell.parse(command)
            XCTAssertEqual(parsed.service, service, command)
            XCTAssertEqual(parsed.app, app, command)
        }
        for bad in [nil, "", "bash", "ls /", "git-receive-pack 'a b.git'", "git-receive-pack '../etc.git'", "git-receive-pack 'Web.git'",
                    "git-upload-archive 'web.git'", "git-receive-pack 'web.git'; rm -rf /", "git-receive-pack 'x'\"'\"''"] {
            XCTAssertThrowsError(try GitShell.parse(bad), bad ?? "nil")
        }
    }

    func testPublicKeys() throws {
        // ssh-ed25519 key body: string "ssh-ed25519" then a 32-byte string.
        var blob = Data([0, 0, 0, 11]) + Data("ssh-ed25519".utf8) + Data([0, 0, 0, 32])
        blob += Data(repeating: 7, count: 32)
        let line = "ssh-ed25519 \(blob.base64EncodedString()) grace@laptop\n"
        let key = try SSHKeys.parsePublicKey(line)
        XCTAssertEqual(key.type, "ssh-ed25519")
        XCTAssertEqual(key.comment, "grace@laptop")
        let wrongType = "ssh-rsa \(blob.base64EncodedString())"
        for (bad, why) in [("", "exactly one line"), ("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----", "exactly one line"),
                           ("ssh-ed25519 !!!notbase64", "not base64"), (wrongType, "does not encode"),
                           ("command=\"x\" ssh-ed25519 AAAA", "not a key type"), (line + line, "exactly one line")] {
            XCTAssertThrowsError(try SSHKeys.parsePublicKey(bad), bad) { error in
                XCTAssertTrue("\(error)".contains(why), "\(bad): \(error)")
            }
        }
    }

    func testAppNames() throws {
        for good in ["a", "web", "my-app-2", String(repeating: "a", count: 63)] { XCTAssertNoThrow(try AppStore.checkName(good), good) }
        for bad in ["", "Web", "2web", "web-", "we_b", "we.b", "../x", "a/b", String(repeating: "a", count: 64), "web\u{0}"] {
            XCTAssertThrowsError(try AppStore.checkName(bad), bad)
        }
    }
}
