import XCTest
import Foundation
import KbuildState
import SQLiteState
import RefStoreConformance
import KbuildCore

/// The SQLite store runs the whole ref-store conformance suite, each case on
/// a fresh database file.
final class SQLiteConformanceTests: XCTestCase {
    func freshStore() throws -> SQLiteRefStore {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("refs-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return try SQLiteRefStore(path: dir.appendingPathComponent("refs.sqlite").path)
    }

    func testEveryConformanceCase() async throws {
        var failures: [String] = []
        for c in RefStoreConformance.Case.allCases {
            do {
                try await RefStoreConformance.run(c, on: try freshStore())
            } catch {
                failures.append("\(c.rawValue): \(error)")
            }
        }
        XCTAssertEqual(failures, [], "\(RefStoreConformance.Case.allCases.count) cases")
    }

    func testAWatchSeesChangesMadeByAnotherProcessOnTheSameFile() async throws {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("refs-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("refs.sqlite").path
        let watcher = try SQLiteRefStore(path: path)
        let writer = try SQLiteRefStore(path: path) // a second connection pool, as the CLI has
        let name = try RefName("apps/web/release")
        let kid = KID(hashing: Array("v1".utf8))
        let seen = try await withThrowingTaskGroup(of: RefChange?.self) { group in
            group.addTask {
                for try await change in watcher.watch(prefix: Schema.apps, after: .zero) { return change }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(200))
                try await writer.set(name, to: kid, actor: "other-process")
                return nil
            }
            var result: RefChange?
            for try await r in group { if let r { result = r } }
            return result
        }
        XCTAssertEqual(seen?.new, kid)
        XCTAssertEqual(seen?.actor, "other-process")
    }

    func testStateSurvivesReopen() async throws {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("refs-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("refs.sqlite").path
        let name = try RefName("apps/web/release")
        do {
            let store = try SQLiteRefStore(path: path)
            for i in 0..<3 { try await store.set(name, to: KID(hashing: [UInt8(i)]), actor: "t") }
        }
        let reopened = try SQLiteRefStore(path: path)
        let version = try await reopened.get(name)?.version
        let history = try await reopened.history(name)
        XCTAssertEqual(version, 3)
        XCTAssertEqual(history.count, 3)
    }

    func testAGarbageFileIsAClearError() throws {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("refs-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("refs.sqlite").path
        try Data(repeating: 0x42, count: 8192).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try SQLiteRefStore(path: path)) { error in
            XCTAssertTrue("\(error)".contains("failed to open ref store \(path)"), "\(error)")
        }
    }
}
