import KbuildCore
import Foundation

/// The stacks kbuild can make from Debian's packages on this host.
extension StackStore {
    public enum Builtin: String, CaseIterable, Sendable {
        /// Debian's busybox-static: one 2 MB static binary and its applets, for fast tests.
        case busybox
        /// `debootstrap --variant=minbase` bookworm with python3 and ca-certificates (~180 MB): the default stack.
        case debian
    }

    /// Makes a built-in stack and names it `name` (the builtin's name by default).
    public func create(_ builtin: Builtin, name: String? = nil, actor: String,
                       log: @Sendable (String) -> Void = { _ in }) async throws -> Stack {
        let name = name ?? builtin.rawValue
        try StackStore.checkName(name)
        let work = keg.dataDir.kegTmp.path + "/stack-\(builtin.rawValue)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: work) }
        switch builtin {
        case .busybox: try StackStore.makeBusyboxRoot(at: work)
        case .debian: try StackStore.makeDebianRoot(at: work, log: log)
        }
        log("storing \(name) in the keg")
        return try await importDirectory(work, name: name, actor: actor, createdBy: "kbuild stack create \(builtin.rawValue)")
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

    /// debootstrap, then what a stack should not carry: apt lists and caches, the host's resolv.conf and hostname.
    static func makeDebianRoot(at root: String, suite: String = "bookworm", log: @Sendable (String) -> Void) throws {
        guard let debootstrap = ["/usr/sbin/debootstrap", "/usr/bin/debootstrap"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw KbuildError(.notFound, "failed to make the debian stack: debootstrap not found (apt-get install debootstrap)")
        }
        let mirror = debianMirror()
        log("debootstrap --variant=minbase --include=python3,ca-certificates \(suite) from \(mirror) (about half a minute)")
        _ = try run(debootstrap, ["--variant=minbase", "--include=python3,ca-certificates", suite, root, mirror], what: "debootstrap")
        let fm = FileManager.default
        for dir in ["var/lib/apt/lists", "var/cache/apt/archives", "var/cache/apt", "var/log"] {
            for name in (try? fm.contentsOfDirectory(atPath: root + "/" + dir)) ?? [] {
                var isDir: ObjCBool = false
                let path = root + "/" + dir + "/" + name
                if fm.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue { try? fm.removeItem(atPath: path) }
            }
        }
        try? fm.removeItem(atPath: root + "/var/lib/apt/lists/partial")
        try? fm.removeItem(atPath: root + "/var/cache/apt/archives/partial")
        try Data("nameserver 127.0.0.1\n".utf8).write(to: URL(fileURLWithPath: root + "/etc/resolv.conf"))
        try Data("kbuild\n".utf8).write(to: URL(fileURLWithPath: root + "/etc/hostname"))
        for dir in ["app"] { try fm.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true) }
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
            let tail = text.split(separator: "\n").suffix(5).joined(separator: "\n")
            throw KbuildError(.io, "\(what ?? executable) failed with status \(process.terminationStatus):\n\(tail)")
        }
        return text
    }
}
