public import Foundation

/// Every path kbuild writes, defined in one place. Nothing outside `root` is written.
///
///     ~/.kbuild/
///       admin.token          the first admin token (0600), read by the CLI on this machine
///       refs.sqlite          the embedded ref store (SQLite, WAL)
///       state.json           where the state is when not in refs.sqlite (etcd://…) and the kbuild cluster it holds
///       keg/objects/ab/…     immutable objects, named by the hex of their KID
///                            (and `.tmp-…` files: objects being written, renamed once durable)
///       keg/tmp/             cache files and pulls being written
///       keg/files/ab/…       the shared read-only file cache that checkouts hard-link to
///       trees/<hex>          checkouts of stack and image layers: the sandboxes' lower dirs
///       sandboxes/<id>       kept upper dirs of sandboxes (`SandboxSpec.upperDir`)
public struct DataDir: Sendable, Equatable {
    public let root: URL

    public init(root: URL) {
        self.root = root.standardizedFileURL
    }

    /// `--data-dir`, else `$KBUILD_DATA_DIR`, else `~/.kbuild`.
    public static func resolve(_ explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> DataDir {
        if let explicit, !explicit.isEmpty { return DataDir(root: URL(fileURLWithPath: explicit)) }
        if let env = environment["KBUILD_DATA_DIR"], !env.isEmpty { return DataDir(root: URL(fileURLWithPath: env)) }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return DataDir(root: URL(fileURLWithPath: home).appendingPathComponent(".kbuild"))
    }

    public var keg: URL { root.appendingPathComponent("keg") }
    public var kegObjects: URL { keg.appendingPathComponent("objects") }
    public var kegTmp: URL { keg.appendingPathComponent("tmp") }
    public var kegFiles: URL { keg.appendingPathComponent("files") }
    /// Checkouts of trees used as sandbox lower dirs, one per tree KID.
    public var trees: URL { root.appendingPathComponent("trees") }
    /// Kept upper dirs of sandboxes.
    public var sandboxes: URL { root.appendingPathComponent("sandboxes") }
    /// Node agents' state (process files, logs), one directory per node: `nodes/NAME`.
    public var nodes: URL { root.appendingPathComponent("nodes") }
    public func node(_ name: String) -> URL { nodes.appendingPathComponent(name) }
    /// The state dirs of the nodes that ran here, by name.
    public func nodeDirectories() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: nodes.path)) ?? []).sorted().map { nodes.path + "/" + $0 }
    }
    /// The router's request log (`requests.log`: request id → the process that answered).
    public var router: URL { root.appendingPathComponent("router") }
    /// The apps' router lines (`APP.router.log`, the `router` source of `kbuild logs APP`).
    public var routerLogs: URL { router.appendingPathComponent("logs") }
    public var refStore: URL { root.appendingPathComponent("refs.sqlite") }
    /// Where the state is, when `kbuild up --state etcd://…` put it elsewhere (`EtcdCluster.Remembered`).
    public var stateFile: URL { root.appendingPathComponent("state.json") }
    public var adminToken: URL { root.appendingPathComponent("admin.token") }
    /// Where `kbuild up` writes the URL of its HTTP server, so the CLI can find it.
    public var serverURLFile: URL { root.appendingPathComponent("server.url") }
    /// The https URL other machines reach the API at (`kbuild up` writes it once bound).
    public var tlsURLFile: URL { root.appendingPathComponent("tls.url") }
    /// The API's TLS identity: its CA and the server certificate (`ServerTLS`).
    public var tls: URL { root.appendingPathComponent("tls") }
    /// Where `kbuild up` writes the URL of its router (apps at http://APP.localhost:PORT/).
    public var routerURLFile: URL { root.appendingPathComponent("router.url") }
    /// Where `kbuild up` writes the URL of its router's HTTPS listener.
    public var routerHTTPSURLFile: URL { root.appendingPathComponent("router-https.url") }

    /// Creates the directory tree (0700 at the root: it holds tokens).
    /// Makes the data dir (0700) and its fixed parts. One that exists is made
    /// 0700 too: the ref store, the admin token and every tenant's objects are
    /// inside, so no other user may list or read it (a 0755 dir left
    /// `refs.sqlite` world-readable); if that cannot be done, it is refused.
    public func create() throws {
        for dir in [root, keg, kegObjects, kegTmp, kegFiles, nodes] {
            if mkdir(dir.path, 0o700) != 0 && errno != EEXIST {
                throw KbuildError.syscall("mkdir", dir.path, verb: "create data dir")
            }
        }
        var st = stat()
        guard stat(root.path, &st) == 0 else { throw KbuildError.syscall("stat", root.path, verb: "check the data dir") }
        if st.st_mode & 0o077 != 0, chmod(root.path, 0o700) != 0 {
            throw KbuildError.syscall("chmod", root.path, verb: "make the data dir private")
        }
    }
}
