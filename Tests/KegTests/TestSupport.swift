import Foundation
import XCTest
@testable import Keg
import KbuildCore

/// A fresh data directory under /tmp, removed when the test ends.
func makeTempDir(_ test: XCTestCase, _ name: String = "kbuild-test") throws -> URL {
    let url = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { Keg.removeTree(url.path) }
    return url
}

func makeKeg(_ test: XCTestCase) throws -> (Keg, URL) {
    let root = try makeTempDir(test, "kbuild-data")
    return (try Keg(dataDir: DataDir(root: root)), root)
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        var w = state
        for _ in 0..<8 where i < count { out[i] = UInt8(truncatingIfNeeded: w); w >>= 8; i += 1 }
    }
    return out
}

func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws {
    XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
    XCTAssertEqual(chmod(path, mode), 0)
}

func assertKbuildError<T>(_ code: KbuildError.Code, containing text: String? = nil, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T) {
    do {
        _ = try body()
        XCTFail("expected a \(code) error, got success", file: file, line: line)
    } catch let error as KbuildError {
        XCTAssertEqual(error.code, code, error.message, file: file, line: line)
        if let text { XCTAssertTrue(error.message.contains(text), "message \(error.message.debugQuoted) lacks \(text.debugQuoted)", file: file, line: line) }
    } catch {
        XCTFail("expected KbuildError, got \(error)", file: file, line: line)
    }
}

/// `find DIR -printf '%P %m %y %l %s'` for files and links: what `get` must reproduce.
func listing(_ dir: String) -> [String] {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/find")
    p.arguments = [dir, "-mindepth", "1", "-printf", "%P|%m|%y|%l|%s\n"]
    let pipe = Pipe()
    p.standardOutput = pipe
    try! p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self).split(separator: "\n").map { line in
        // Directory sizes depend on the filesystem, not the content.
        let parts = line.split(separator: "|", omittingEmptySubsequences: false)
        return parts[2] == "d" ? parts[0..<4].joined(separator: "|") : String(line)
    }.sorted()
}

func runTool(_ tool: String, _ args: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Sets the modification time of every object file and pack far in the past (for gc tests).
func ageEverything(_ keg: Keg) {
    var past = [timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000, tv_nsec: 0)]
    for kid in (try? keg.looseObjects()) ?? [] { _ = utimensat(AT_FDCWD, keg.objectPath(kid), &past, 0) }
    for pack in keg.packs.all { _ = utimensat(AT_FDCWD, keg.packs.path(pack), &past, 0) }
}

/// Takes one object out of the Keg (for tests of missing objects), wherever it is stored.
func removeObject(_ keg: Keg, _ kid: KID) throws {
    if let location = keg.packs.locate(kid) {
        let pack = location.pack
        try keg.repack([(pack, (0..<pack.count).filter { pack.kid(at: $0) != kid })])
        unlink(keg.packs.dir + "/" + pack.name + ".idx")
        unlink(keg.packs.path(pack))
    } else {
        guard unlink(keg.objectPath(kid)) == 0 else { throw KbuildError.syscall("unlink", keg.objectPath(kid), verb: "remove") }
    }
}
