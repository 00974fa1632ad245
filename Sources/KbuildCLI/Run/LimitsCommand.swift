import ArgumentParser
import Foundation
import KbuildAPI
import KbuildClient
import KbuildCore
import KbuildState

/// `kbuild apps:limits APP [--keg 10G] [--memory 4G] [--cpus 2] [--builds 2]`.
struct AppsLimits: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apps:limits",
        abstract: "Show an app's limits and what it uses; with options, set them (the admin's call).",
        discussion: """
            --keg: bytes of pushed sources and built images the app may hold (a push over it is refused). --memory, --cpus: \
            all its processes at once, the formation's and one-off runs' (a ps:scale or run over them is refused). --builds: \
            builds queued or running at once. --volumes: bytes of volumes (default \(formatMemory(VolumeRecord.defaultAppLimit))). \
            `none` removes a limit; a limit not named stays as it is.
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The app.") var app: String
    @Option(help: "Keg bytes (e.g. 10G), or none.") var keg: String?
    @Option(help: "Memory of all its processes (e.g. 4G), or none.") var memory: String?
    @Option(help: "CPUs of all its processes (e.g. 2), or none.") var cpus: String?
    @Option(help: "Builds queued or running at once, or none.") var builds: String?
    @Option(help: "Bytes of volumes (e.g. 50G), or none for the default.") var volumes: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let client = try global.client()
        var limits = try await client.limits(app)
        if keg != nil || memory != nil || cpus != nil || builds != nil || volumes != nil {
            func bytes(_ text: String?, _ current: UInt64?, _ what: String) throws -> UInt64? {
                guard let text else { return current }
                return text == "none" ? nil : try parseBytes(text, what: what)
            }
            limits.kegBytes = try bytes(keg, limits.kegBytes, "--keg")
            limits.memory = try bytes(memory, limits.memory, "--memory")
            limits.volumeBytes = try bytes(volumes, limits.volumeBytes, "--volumes")
            if let cpus {
                guard cpus == "none" || Double(cpus) != nil else { throw ValidationError("--cpus must be a number or none, not \(cpus.debugDescription)") }
                limits.cpus = Double(cpus)
            }
            if let builds {
                guard builds == "none" || Int(builds) != nil else { throw ValidationError("--builds must be a whole number or none, not \(builds.debugDescription)") }
                limits.builds = Int(builds)
            }
            limits.used = nil
            limits = try await client.setLimits(app, limits)
        }
        if json { return try printJSON(limits) }
        let used = limits.used
        say("=== \(app) limits")
        say("Keg:     \(used.map { formatBytes($0.kegBytes) } ?? "-") of \(limits.kegBytes.map(formatBytes) ?? "no limit")")
        say("Memory:  \(used.map { formatBytes($0.memory) } ?? "-") of \(limits.memory.map(formatBytes) ?? "no limit")")
        say("CPUs:    \(used.map { String(format: "%g", $0.cpus) } ?? "-") of \(limits.cpus.map { String(format: "%g", $0) } ?? "no limit")")
        say("Builds:  \(used.map { String($0.builds) } ?? "-") of \(limits.builds.map(String.init) ?? "no limit")")
        say("Volumes: \(used.map { formatBytes($0.volumeBytes ?? 0) } ?? "-") of \(formatBytes(limits.volumeBytes ?? VolumeRecord.defaultAppLimit))")
    }
}
