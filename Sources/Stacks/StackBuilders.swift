import OCI
import KbuildCore
import Foundation
public import KbuildState

/// The stacks kbuild can make from Debian's packages on this host.
extension StackStore {
    public enum Builtin: String, CaseIterable, Sendable {
        /// Debian's busybox-static: one 2 MB static binary and its applets, for fast tests.
        case busybox
        /// Debian 12 (bookworm): Python 3.11, Node 18, Go 1.19.
        case debian12 = "debian-12"
        /// Debian 13 (trixie): Python 3.13, Node 20, Go 1.24.
        case debian13 = "debian-13"
        /// Add-on stacks over those: PostgreSQL 15 and Redis 7; PostgreSQL 17 and Redis 8.
        case debian12Addons = "debian-12-addons"
        case debian13Addons = "debian-13-addons"

        /// `debian` is the newest Debian.
        public init?(parsing name: String) {
            self.init(rawValue: name == StackStore.debianAlias ? Builtin.debian13.rawValue : name)
        }

        var suite: String? {
            switch self {
            case .busybox, .debian12Addons, .debian13Addons: nil
            case .debian12: "bookworm"
            case .debian13: "trixie"
            }
        }

        /// For an add-on stack, the stack it is made over.
        var addonsBase: Builtin? {
            switch self {
            case .debian12Addons: .debian12
            case .debian13Addons: .debian13
            default: nil
            }
        }
    }

    /// What a Debian stack's run image holds besides minbase: the runtimes
    /// apps run on and the shared libraries they load, no compilers.
    public static let runPackages = ["ca-certificates", "python3", "nodejs", "libpq5", "tzdata"]
    /// The build image: the run image plus what builds need (Heroku's
    /// `heroku-24-build`): compilers, headers, pip and venv, npm, Go, git.
    public static let buildPackages = ["build-essential", "python3-dev", "python3-venv", "python3-pip", "nodejs", "npm", "golang",
                                       "git", "pkg-config", "libpq-dev", "curl"]

    /// Makes a built-in stack and names it `name` (the builtin's name by
    /// default). A Debian stack is two images: `NAME`, the run image apps run
    /// on, and `NAME-build`, the run image's layer plus one with compilers and
    /// headers, that builds run on: compilers never ship to nodes.
    public func create(_ builtin: Builtin, name: String? = nil, actor: String,
                       log: @Sendable (String) -> Void = { _ in }) async throws -> Stack {
        let name = name ?? builtin.rawValue
        if let base = builtin.addonsBase {
            return try await createAddons(base: base.rawValue, name: name, actor: actor, log: log)
        }
        try StackStore.checkName(name)
        try StackStore.checkName(name + StackStore.buildSuffix)
        let work = keg.dataDir.kegTmp.path + "/stack-\(builtin.rawValue)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: work) }
        guard let suite = builtin.suite else {
            try StackStore.makeBusyboxRoot(at: work)
            log("storing \(name) in the keg")
            return try await importDirectory(work, name: name, actor: actor, createdBy: "kbuild stack create \(builtin.rawValue)")
        }
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let run = work + "/run", build = work + "/build"
        let versions = try StackStore.makeDebianRoots(run: run, buildLayer: build, scratch: work, suite: suite, log: log)
        log("storing \(name) and \(name)\(StackStore.buildSuffix) in the keg")
        let runLayer = try images.putLayer(directory: run).layer
        let buildLayer = try images.putLayer(directory: build).layer
        var labels = ["dev.kbuild.stack": name, "dev.kbuild.stack.debian": suite]
        for (runtime, version) in versions.run { labels["dev.kbuild.stack.\(runtime)"] = version }
        let runImage = try images.putImage(
            layers: [runLayer], config: ImageConfig.Config(Env: StackStore.debianEnvironment, Cmd: ["/bin/sh"], WorkingDir: "/", Labels: labels),
            createdBy: "kbuild stack create \(builtin.rawValue) (run image: minbase + \(StackStore.runPackages.joined(separator: " ")))",
            annotations: ["org.opencontainers.image.ref.name": name])
        var buildLabels = labels
        buildLabels["dev.kbuild.stack"] = name + StackStore.buildSuffix
        for (runtime, version) in versions.build { buildLabels["dev.kbuild.stack.\(runtime)"] = version }
        let buildImage = try images.putImage(
            layers: [runLayer, buildLayer], config: ImageConfig.Config(Env: StackStore.debianEnvironment, Cmd: ["/bin/sh"], WorkingDir: "/", Labels: buildLabels),
            createdBy: "kbuild stack create \(builtin.rawValue) (build image: the run image + \(StackStore.buildPackages.joined(separator: " ")))",
            annotations: ["org.opencontainers.image.ref.name": name + StackStore.buildSuffix])
        // The build image first: a stack whose run image is there has its build image too.
        _ = try await refs.compareAndSwap(try StackStore.refName(name + StackStore.buildSuffix), to: buildImage, expecting: .any, actor: actor)
        _ = try await refs.compareAndSwap(try StackStore.refName(name), to: runImage, expecting: .any, actor: actor)
        return try await get(name)
    }

    static let debianEnvironment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]

    /// The runtimes a Debian stack has, by the labels `create` gave its run and build images.
    public static func runtimes(of config: ImageConfig.Config?) -> [String: String] {
        var out: [String: String] = [:]
        for (key, value) in config?.Labels ?? [:] where key.hasPrefix("dev.kbuild.stack.") && key != "dev.kbuild.stack.debian" {
            out[String(key.dropFirst("dev.kbuild.stack.".count))] = value
        }
        return out
    }

    /// A root filesystem of Debian's static busybox with every applet linked.
    static func makeBusyboxRoot(at root: String, busybox: String = "/bin/busybox") throws {
        guard FileManager.default.fileExists(atPath: busybox) else {
            throw KbuildError(.notFound, "failed to make the busybox stack: \(busybox) not found (apt-get install busybox-static)")
        }
        guard try !isDynamicELF(busybox) else {
            throw KbuildError(.invalidArgument, "failed to make the busybox stack: \(busybox) is dynamically linked; install busybox-static")
        }
        let fm = FileManager.default
        for dir in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root", "home", "var/tmp", "app"] {
            try fm.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
        }
        for (dir, mode) in [("tmp", 0o1777), ("var/tmp", 0o1777), ("root", 0o700)] {
            try fm.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
            chmod(root + "/" + dir, mode_t(mode))
        }
        try fm.copyItem(atPath: busybox, toPath: root + "/bin/busybox")
        chmod(root + "/bin/busybox", 0o755)
        let applets = try run(busybox, ["--list-full"])
        for applet in applets.split(separator: "\n") where !applet.isEmpty && applet != "bin/busybox" {
            let link = root + "/" + applet
            if !fm.fileExists(atPath: link) { try fm.createSymbolicLink(atPath: link, withDestinationPath: "/bin/busybox") }
        }
        let files = [
            "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            "etc/group": "root:x:0:\nnogroup:x:65534:\n",
            "etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
            "etc/os-release": "NAME=kbuild-busybox\nID=busybox\n",
        ]
        for (path, text) in files { try Data(text.utf8).write(to: URL(fileURLWithPath: root + "/" + path)) }
    }

    /// Where the .debs a stack is made of are kept, so a second `stack create` downloads nothing.
    static let debCache = "/var/cache/kbuild/debs"

    /// The run image's root at `run` (debootstrap minbase + `runPackages`)
    /// and the build image's layer at `buildLayer`: what installing
    /// `buildPackages` over the run root adds (an overlay's upper dir). Returns
    /// the runtimes' versions in each.
    static func makeDebianRoots(run runRoot: String, buildLayer: String, scratch: String, suite: String,
                                log: @Sendable (String) -> Void) throws -> (run: [String: String], build: [String: String]) {
        guard let debootstrap = ["/usr/sbin/debootstrap", "/usr/bin/debootstrap"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw KbuildError(.notFound, "failed to make a debian stack: debootstrap not found (apt-get install debootstrap)")
        }
        let fm = FileManager.default
        try fm.createDirectory(atPath: debCache, withIntermediateDirectories: true)
        let mirror = debianMirror()
        log("debootstrap --variant=minbase \(suite) from \(mirror)")
        _ = try run(debootstrap, ["--variant=minbase", "--cache-dir=\(debCache)", suite, runRoot, mirror], what: "debootstrap")
        log("installing the run image's packages: \(runPackages.joined(separator: " "))")
        try aptInstall(runPackages, root: runRoot)
        try clean(root: runRoot)
        let versions = try runtimeVersions(root: runRoot)

        // The build image's layer: an overlay over the run root, whose upper dir is the difference.
        let merged = scratch + "/merged", overlayWork = scratch + "/overlay-work"
        for dir in [buildLayer, merged, overlayWork] { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        _ = try self.run("/bin/mount", ["-t", "overlay", "overlay", "-o", "lowerdir=\(runRoot),upperdir=\(buildLayer),workdir=\(overlayWork)", merged],
                         what: "mount the build image's overlay")
        defer { _ = try? self.run("/bin/umount", [merged]) }
        log("installing the build image's packages: \(buildPackages.joined(separator: " "))")
        try aptInstall(buildPackages, root: merged)
        try clean(root: merged)
        let buildVersions = try runtimeVersions(root: merged)
        _ = try self.run("/bin/umount", [merged])
        // What the overlay recorded as deleted (whiteouts, opaque marks) is not a layer's to say: the apt lists it removed are gone anyway.
        try removeWhiteouts(buildLayer)
        return (versions, buildVersions)
    }

    /// `apt-get install --no-install-recommends` in `root` (chrooted), with
    /// the host's deb cache bind-mounted as apt's archive dir.
    static func aptInstall(_ packages: [String], root: String) throws {
        let archives = root + "/var/cache/apt/archives"
        try FileManager.default.createDirectory(atPath: archives, withIntermediateDirectories: true)
        // The host's resolvers while apt runs (`clean` puts the stack's own back).
        if let resolv = FileManager.default.contents(atPath: "/etc/resolv.conf") {
            unlink(root + "/etc/resolv.conf")
            try resolv.write(to: URL(fileURLWithPath: root + "/etc/resolv.conf"))
        }
        _ = try run("/bin/mount", ["--bind", debCache, archives], what: "mount the deb cache")
        defer { _ = try? run("/bin/umount", [archives]) }
        let script = "export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8; apt-get update -qq && apt-get install -y -qq --no-install-recommends \(packages.joined(separator: " ")) >/dev/null"
        _ = try run("/usr/sbin/chroot", [root, "/bin/sh", "-c", script], what: "apt-get install \(packages.joined(separator: " "))")
    }

    /// What a stack should not carry: apt lists and caches, logs, the host's
    /// resolv.conf and hostname; nothing that says when it was made, so two
    /// creates from the same packages give the same KIDs.
    static func clean(root: String) throws {
        let fm = FileManager.default
        for dir in ["var/lib/apt/lists", "var/cache/apt/archives", "var/cache/apt", "var/log", "var/cache/debconf", "var/cache/ldconfig"] {
            for name in (try? fm.contentsOfDirectory(atPath: root + "/" + dir)) ?? [] {
                var isDir: ObjCBool = false
                let path = root + "/" + dir + "/" + name
                if fm.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue, dir != "var/cache/debconf" || name.hasSuffix("-old") {
                    try? fm.removeItem(atPath: path)
                }
            }
        }
        // Logs, at any depth (apt's history.log and term.log carry the time of the install): the
        // directories stay, as packages expect them.
        if let walker = fm.enumerator(atPath: root + "/var/log") {
            while let rel = walker.nextObject() as? String {
                var st = stat()
                let path = root + "/var/log/" + rel
                if lstat(path, &st) == 0, st.st_mode & S_IFMT != S_IFDIR { unlink(path) }
            }
        }
        for leftover in ["var/lib/apt/lists/partial", "var/lib/apt/lists/auxfiles", "var/cache/apt/archives/partial", "var/lib/dpkg/status-old", "var/lib/dpkg/diversions-old",
                         "etc/machine-id", "var/lib/dbus/machine-id"] {
            try? fm.removeItem(atPath: root + "/" + leftover)
        }
        try Data("nameserver 127.0.0.1\n".utf8).write(to: URL(fileURLWithPath: root + "/etc/resolv.conf"))
        try Data("kbuild\n".utf8).write(to: URL(fileURLWithPath: root + "/etc/hostname"))
        try fm.createDirectory(atPath: root + "/app", withIntermediateDirectories: true)
    }

    /// The versions of python3, node and go in `root` (those it has).
    static func runtimeVersions(root: String) throws -> [String: String] {
        var out: [String: String] = [:]
        let probes = [("python", "python3 -c 'import platform; print(platform.python_version())'"), ("node", "node --version"),
                      ("go", "head -n 1 /usr/lib/go/VERSION")]  // not `go version`: it needs /proc, which the chroot has not
        for (runtime, command) in probes {
            guard let text = try? run("/usr/sbin/chroot", [root, "/bin/sh", "-c", "HOME=/root GOCACHE=/tmp/go-cache \(command) 2>/dev/null"]) else { continue }
            let version = text.trimmingCharacters(in: .whitespacesAndNewlines).trimmingPrefix("v").trimmingPrefix("go")
            if !version.isEmpty, version.allSatisfy({ $0.isNumber || $0 == "." }) { out[runtime] = String(version) }
        }
        try? FileManager.default.removeItem(atPath: root + "/tmp/go-cache")
        return out
    }

    /// Removes an overlay upper dir's whiteouts (0:0 character devices; the Keg keeps no xattrs, so opaque marks go anyway).
    static func removeWhiteouts(_ dir: String) throws {
        guard let walker = FileManager.default.enumerator(atPath: dir) else { return }
        var whiteouts: [String] = []
        while let rel = walker.nextObject() as? String {
            var st = stat()
            let path = dir + "/" + rel
            if lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFCHR, st.st_rdev == 0 { whiteouts.append(path) }
        }
        for path in whiteouts { unlink(path) }
    }

    /// The Debian mirror apt on this host uses (deb822 or one-line sources), else deb.debian.org.
    static func debianMirror() -> String {
        if let text = try? String(contentsOfFile: "/etc/apt/sources.list.d/debian.sources", encoding: .utf8) {
            for line in text.split(separator: "\n") where line.hasPrefix("URIs:") {
                if let uri = line.dropFirst(5).split(separator: " ").first, !uri.contains("security") { return String(uri) }
            }
        }
        if let text = try? String(contentsOfFile: "/etc/apt/sources.list", encoding: .utf8) {
            for line in text.split(separator: "\n") {
                let words = line.split(separator: " ")
                if words.count >= 3, words[0] == "deb", !words[1].hasPrefix("["), !words[1].contains("security") { return String(words[1]) }
            }
        }
        return "http://deb.debian.org/debian"
    }

    /// Whether an ELF file asks for a program interpreter (is dynamically linked).
    static func isDynamicELF(_ path: String) throws -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw KbuildError(.io, "failed to read \(path)")
        }
        defer { try? handle.close() }
        let header = [UInt8](handle.readData(ofLength: 64))
        guard header.count == 64, header[0..<4] == [0x7f, 0x45, 0x4c, 0x46], header[4] == 2 else {
            throw KbuildError(.invalidArgument, "\(path) is not a 64-bit ELF executable")
        }
        func le<T: FixedWidthInteger>(_ bytes: [UInt8], _ at: Int, _: T.Type) -> T {
            bytes[at..<(at + MemoryLayout<T>.size)].reversed().reduce(T(0)) { $0 << 8 | T($1) }
        }
        let phoff = le(header, 32, UInt64.self), phentsize = Int(le(header, 54, UInt16.self)), phnum = Int(le(header, 56, UInt16.self))
        guard phentsize >= 4, phnum < 256 else { return false }
        try handle.seek(toOffset: phoff)
        let table = [UInt8](handle.readData(ofLength: phentsize * phnum))
        return (0..<phnum).contains { i in i * phentsize + 4 <= table.count && le(table, i * phentsize, UInt32.self) == 3 }
    }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String], what: String? = nil) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            let tail = text.split(separator: "\n").suffix(12).joined(separator: "\n")
            throw KbuildError(.io, "\(what ?? executable) failed with status \(process.terminationStatus):\n\(tail)")
        }
        return text
    }
}
