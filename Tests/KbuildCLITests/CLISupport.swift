import Foundation
import XCTest

/// The `kbuild` executable under test: $KBUILD_BIN, else the one built beside this test bundle.
let kbuildBinary: String = {
    if let env = ProcessInfo.processInfo.environment["KBUILD_BIN"], !env.isEmpty { return env }
    let besideTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("kbuild").path
    if FileManager.default.isExecutableFile(atPath: besideTests) { return besideTests }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug/kbuild").path
}()

struct Result {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a program to completion and captures its output.
@discardableResult
func sh(_ tool: String, _ args: [String], env: [String: String] = [:], stdin: Data? = nil) throws -> Result {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = args
    var environment = ProcessInfo.processInfo.environment
    environment.removeValue(forKey: "KBUILD_DATA_DIR")
    for (k, v) in env { environment[k] = v }
    p.environment = environment
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let input = Pipe()
    if stdin != nil { p.standardInput = input }
    try p.run()
    if let stdin {
        input.fileHandleForWriting.write(stdin)
        try input.fileHandleForWriting.close()
    }
    // Read both pipes concurrently so neither fills up and blocks the child.
    let errData = UnsafeBox<Data>(Data())
    let reader = Thread { errData.value = err.fileHandleForReading.readDataToEndOfFile() }
    reader.start()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    while !reader.isFinished { usleep(1000) }
    return Result(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData.value, as: UTF8.self))
}

final class UnsafeBox<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

func kbuild(_ args: [String], dataDir: String, env: [String: String] = [:]) throws -> Result {
    try sh(kbuildBinary, args + ["--data-dir", dataDir], env: env)
}

func tempDir(_ test: XCTestCase, _ name: String) throws -> String {
    let path = NSTemporaryDirectory() + "kbuild-cli-\(name)-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    test.addTeardownBlock {
        _ = try? sh("/bin/chmod", ["-R", "u+rwX", path])
        try? FileManager.default.removeItem(atPath: path)
    }
    return path
}

/// `find DIR -printf` of names, modes, types, link targets and file sizes.
func treeListing(_ dir: String) throws -> [String] {
    let r = try sh("/usr/bin/find", [dir, "-mindepth", "1", "-printf", "%P|%m|%y|%l|%s\n"])
    return r.stdout.split(separator: "\n").map { line in
        let parts = line.split(separator: "|", omittingEmptySubsequences: false)
        return parts[2] == "d" ? parts[0..<4].joined(separator: "|") : String(line)
    }.sorted()
}
