import KbuildCore
import Foundation

/// The system tools the sandbox module runs (iproute2, nftables, mkfs,
/// mount): each is a child process waited for, so each runs on a thread of
/// its own (`offThread`), never on the cooperative pool.
enum Tool {
    /// Runs a program to its end (these take milliseconds), its stderr and stdout together.
    static func run(_ argv: [String], input: String?) throws -> (status: Int32, output: String) {
        guard FileManager.default.isExecutableFile(atPath: argv[0]) else {
            throw KbuildError(.notFound, "failed to run \(argv[0]): it is not installed (kbuild needs Debian's iproute2 and nftables)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        let stdin = Pipe()
        p.standardInput = input == nil ? FileHandle.nullDevice : stdin
        try p.run()
        if let input {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try? stdin.fileHandleForWriting.close()
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// Runs `body` on a thread of its own: for blocking work (a child process
/// waited for) that must not hold a thread of the cooperative pool.
public func offThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.start()
    }
}
