import ArgumentParser
import Foundation
import KbuildCore
import Keg
import KbuildState

struct KegGC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Delete objects unreachable from refs, their retained history and pins.",
        discussion: """
            Kept: every current ref; the whole history of apps/*/release (rollback targets) and pins/;
            for other refs their last --keep-last values and all values younger than --keep-for;
            objects younger than --grace; files a checkout still links to.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "Keep the last N values of every ref.") var keepLast = RetentionRule.default.keepLast
    @Option(help: "Keep every ref value younger than this (e.g. 30d).") var keepFor = "30d"
    @Option(help: "Never delete objects younger than this (puts in flight).") var grace = "1h"
    @Flag(help: "Report what would be deleted; delete nothing.") var dryRun = false

    func validate() throws {
        guard keepLast >= 1 else { throw ValidationError("--keep-last must be at least 1 (the current value is always kept), not \(keepLast)") }
        _ = try parseDuration(keepFor)
        _ = try parseDuration(grace)
    }

    func run() async throws {
        let keg = try global.openKeg()
        let refs = try global.openRefs()
        var rule = RetentionRule.default
        rule.keepLast = keepLast
        rule.keepFor = try parseDuration(keepFor)
        let roots = try await rule.roots(in: refs)
        let graceSeconds = try parseDuration(grace)
        if graceSeconds < 2 * Keg.freshenAfter {
            FileHandle.standardError.write(Data("warning: --grace \(grace) is shorter than \(Int(2 * Keg.freshenAfter / 60))m: safe only while no put or pull runs\n".utf8))
        }
        let report = try keg.gc(roots: roots, grace: graceSeconds, dryRun: dryRun)
        for kid in report.missingRoots { print("warning: a ref names \(kid), which is not in the Keg") }
        let verb = dryRun ? "would delete" : "deleted"
        print("gc: \(report.reachable) reachable; \(verb) \(report.deleted) objects, \(report.cacheFilesDeleted) cache files, \(report.tmpFilesDeleted) temporary files (\(formatBytes(report.bytesFreed))); \(dryRun ? "would rewrite" : "rewrote") \(report.packsRewritten) packs; kept \(report.keptYoung) younger than \(grace)")
    }
}

struct KegPin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pin", abstract: "Keep an object from gc: sets the ref pins/NAME.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The KID (or a unique prefix).") var kid: KIDArgument
    @Argument(help: "The pin's name (default: the KID's hex).") var name: String?

    func run() async throws {
        let keg = try global.openKeg()
        let resolved = try kid.resolve(in: keg)
        let ref = try Schema.pin((name ?? resolved.hex))
        try await global.openRefs().set(ref, to: resolved, actor: currentActor)
        print("\(ref) -> \(resolved)")
    }
}

struct KegUnpin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unpin", abstract: "Remove the pin pins/NAME.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The pin's name.") var name: String

    func run() async throws {
        try await global.openRefs().compareAndSwap(try Schema.pin(name), to: nil, expecting: .any, actor: currentActor)
    }
}
