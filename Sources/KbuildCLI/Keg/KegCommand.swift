import ArgumentParser
import Foundation
import KbuildCore
import Keg

struct KegCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keg",
        abstract: "The content-addressed store: put, get and inspect objects by KID.",
        subcommands: [KegPut.self, KegGet.self, KegLs.self, KegCat.self, KegCheckout.self, KegFsck.self, KegGC.self, KegStats.self, KegPin.self, KegUnpin.self, KegPull.self]
    )
}

/// A KID argument as typed: a full KID or a unique prefix of 8+ hex digits.
/// Parsed when used, so a bad one gets KIDPrefix's precise message.
struct KIDArgument: ExpressibleByArgument {
    let text: String
    init?(argument: String) { text = argument }

    func resolve(in keg: Keg) throws -> KID { try keg.resolve(KIDPrefix(parsing: text)) }
}

struct KegPut: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "put", abstract: "Store a file or directory tree and print its KID.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file or directory. Symlinks inside a directory are stored as symlinks.")
    var path: String

    func run() throws {
        let keg = try global.openKeg()
        let progress = progressLine("put")
        defer { endProgressLine(progress) }
        let kid = try keg.put(path: path, progress: progress)
        endProgressLine(progress)
        print(kid)
    }
}

struct KegGet: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Restore an object to a new path: byte-identical content, modes and symlinks.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The KID (or a unique prefix of 8+ hex digits).") var kid: KIDArgument
    @Argument(help: "Where to restore it; must not exist.") var destination: String

    func run() throws {
        let keg = try global.openKeg()
        let progress = progressLine("get")
        defer { endProgressLine(progress) }
        try keg.get(try kid.resolve(in: keg), to: destination, progress: progress)
    }
}

struct KegCheckout: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkout",
        abstract: "Materialise a tree as hard links into the shared read-only file cache (no bytes copied).",
        discussion: "The checkout is for reading (overlayfs lower dirs): its files are shared with every other checkout. Use `keg get` for a private, writable copy."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The tree's KID (or a unique prefix).") var kid: KIDArgument
    @Argument(help: "Where to materialise it; must not exist.") var destination: String

    func run() throws {
        let keg = try global.openKeg()
        let progress = progressLine("checkout")
        defer { endProgressLine(progress) }
        try keg.checkout(try kid.resolve(in: keg), to: destination, progress: progress)
    }
}

struct KegCat: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cat", abstract: "Write an object's bytes to stdout (a tree is listed, as by `keg ls`).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The KID (or a unique prefix).") var kid: KIDArgument

    func run() throws {
        let keg = try global.openKeg()
        let resolved = try kid.resolve(in: keg)
        let reader = try ObjectReader(keg: keg, kid: resolved)
        if reader.kind == .tree {
            try KegLs.list(keg.tree(resolved), keg: keg, prefix: "", recursive: false)
            return
        }
        try reader.forEachPiece { piece in
            guard piece.withUnsafeBytes({ Keg.writeAll(1, $0) }) else {
                throw KbuildError.syscall("write", "stdout", verb: "cat \(resolved)")
            }
        }
    }
}

struct KegLs: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List a tree: mode, type, KID, size, name.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The KID (or a unique prefix).") var kid: KIDArgument
    @Flag(name: .shortAndLong, help: "Recurse into subtrees, printing full paths.") var recursive = false
    @Flag(help: "Print JSON.") var json = false

    struct Item: Encodable { let path: String; let type: String; let mode: String; let kid: KID?; let size: UInt64; let target: String? }

    func run() throws {
        let keg = try global.openKeg()
        let resolved = try kid.resolve(in: keg)
        let kind = try keg.kind(of: resolved)
        guard kind == .tree else {
            let size = try keg.logicalSize(of: resolved)
            if json { try printJSON([Item(path: "", type: kind.description, mode: "", kid: resolved, size: size, target: nil)]) }
            else { print("\(kind) \(resolved) \(size)") }
            return
        }
        if json {
            var items: [Item] = []
            func walk(_ tree: Tree, _ prefix: String) throws {
                for e in tree.entries {
                    let path = prefix + e.nameString
                    items.append(Item(path: path, type: "\(e.type)", mode: String(e.mode, radix: 8), kid: e.kid, size: e.size,
                                      target: e.type == .symlink ? e.targetString : nil))
                    if recursive && e.type == .directory { try walk(keg.tree(e.kid!), path + "/") }
                }
            }
            try walk(keg.tree(resolved), "")
            try printJSON(items)
        } else {
            try KegLs.list(keg.tree(resolved), keg: keg, prefix: "", recursive: recursive)
        }
    }

    static func list(_ tree: Tree, keg: Keg, prefix: String, recursive: Bool) throws {
        for e in tree.entries {
            let mode = String(format: "%04o", e.mode)
            let path = prefix + e.nameString
            switch e.type {
            case .file: print("\(mode) file \(e.kid!) \(String(e.size).leftPad(10)) \(path)")
            case .directory: print("\(mode) tree \(e.kid!) \("-".leftPad(10)) \(path)/")
            case .symlink: print("\(mode) link \(String(repeating: "-", count: 66)) \(String(e.size).leftPad(10)) \(path) -> \(e.targetString)")
            }
            if recursive && e.type == .directory { try list(keg.tree(e.kid!), keg: keg, prefix: path + "/", recursive: true) }
        }
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

struct KegFsck: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fsck", abstract: "Verify every object's hash and that nothing a tree names is missing.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        let keg = try global.openKeg()
        let progress = progressLine("fsck")
        let report = try keg.fsck(progress: progress)
        endProgressLine(progress)
        for problem in report.problems { print(problem) }
        print("fsck: \(report.objectsChecked) objects, \(formatBytes(report.bytesChecked)) checked, \(report.problems.count) problems")
        if !report.isClean { throw ExitCode(1) }
    }
}

struct KegStats: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Count objects by kind, with stored and logical bytes.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    struct Row: Encodable { let kind: String; let objects: Int; let stored: UInt64; let logical: UInt64 }
    struct Out: Encodable { let kinds: [Row]; let objects: Int; let stored: UInt64; let compressed: Int; let cacheFiles: Int; let cacheBytes: UInt64; let tmpFiles: Int }

    func run() throws {
        let s = try global.openKeg().stats()
        let rows = ObjectKind.allCases.map { k in Row(kind: k.description, objects: s.byKind[k]?.objects ?? 0, stored: s.byKind[k]?.stored ?? 0, logical: s.byKind[k]?.logical ?? 0) }
        if json {
            try printJSON(Out(kinds: rows, objects: s.objects, stored: s.stored, compressed: s.compressed, cacheFiles: s.cacheFiles, cacheBytes: s.cacheBytes, tmpFiles: s.tmpFiles))
            return
        }
        print("kind        objects       stored      logical")
        for r in rows {
            print("\(r.kind.padding(toLength: 8, withPad: " ", startingAt: 0)) \(String(r.objects).leftPad(10)) \(formatBytes(r.stored).leftPad(12)) \(formatBytes(r.logical).leftPad(12))")
        }
        print("total    \(String(s.objects).leftPad(10)) \(formatBytes(s.stored).leftPad(12))   (\(s.compressed) compressed)")
        print("file cache: \(s.cacheFiles) files, \(formatBytes(s.cacheBytes)); tmp: \(s.tmpFiles) files")
    }
}
