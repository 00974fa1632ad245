import Foundation
import KbuildCore
import Keg
@testable import KbuildServer
import XCTest

/// Upload sessions are bounded: an idle one is dropped with what it staged,
/// and only so many run at once.
final class RegistryUploadsTests: XCTestCase {
    func testIdleSessionsAreDroppedAndSessionsAreCapped() async throws {
        let dir = try tempDir(self, "uploads")
        let keg = try Keg(dataDir: DataDir(root: URL(fileURLWithPath: dir)))
        let uploads = RegistryUploads(keg: keg, idleTimeout: .milliseconds(200), maxSessions: 2)
        let idle = try await uploads.start(repository: "web")
        let bytes = [UInt8](repeating: 7, count: 9 << 20)  // over a block: a pack is staged
        _ = try await uploads.append(idle, repository: "web", bytes: bytes, at: 0)
        let second = try await uploads.start(repository: "web")
        do {
            _ = try await uploads.start(repository: "web")
            XCTFail("a third session at once is refused")
        } catch let error as RegistryError {
            XCTAssertEqual(error.code, "TOOMANYREQUESTS")
        }
        try await Task.sleep(for: .milliseconds(300))
        _ = try await uploads.start(repository: "web")  // sweeps both idle ones
        do {
            _ = try await uploads.append(idle, repository: "web", bytes: [1], at: nil)
            XCTFail("the idle session is gone")
        } catch let error as RegistryError {
            XCTAssertEqual(error.code, "BLOB_UPLOAD_UNKNOWN")
            XCTAssertTrue(error.message.contains("idle for over"), error.message)
        }
        _ = second
        // One repository cannot take every session: its own cap is reached first.
        let perRepository = RegistryUploads(keg: keg, idleTimeout: .seconds(60), maxSessions: 8, maxPerRepository: 1)
        _ = try await perRepository.start(repository: "abandoned")
        do {
            _ = try await perRepository.start(repository: "abandoned")
            XCTFail("a second session in one repository is refused")
        } catch let error as RegistryError {
            XCTAssertEqual(error.code, "TOOMANYREQUESTS")
            XCTAssertTrue(error.message.contains("uploads to abandoned are in progress"), error.message)
        }
        _ = try await perRepository.start(repository: "other")
        let staged = (try? FileManager.default.contentsOfDirectory(atPath: dir + "/keg/packs")) ?? []
        XCTAssertEqual(staged.filter { $0.hasPrefix(".tmp-") }, [], "what the idle upload staged went with it")
    }
}
