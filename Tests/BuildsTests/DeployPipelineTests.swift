import XCTest
@testable import GitGateway
import KbuildCore

/// The pure parts of the deploy pipeline: where a log may be cut, and who may take a shared build off the queue.
final class DeployPipelineTests: XCTestCase {
    func testALogIsNeverCutInsideACharacter() {
        let text = Array("ok é € 𝄞\n".utf8)
        XCTAssertEqual(UTF8Cut.whole(text), text.count, "whole text goes out whole")
        XCTAssertEqual(UTF8Cut.whole([]), 0)
        // Each character cut after any of its bytes but the last: what comes before it goes, it waits.
        for (character, start) in [("é", 3), ("€", 6), ("𝄞", 10)] {
            let length = character.utf8.count
            for keep in 1..<length {
                let cut = Array(text[..<(start + keep)])
                XCTAssertEqual(UTF8Cut.whole(cut), start, "\(character) cut after \(keep) of \(length) bytes")
            }
            XCTAssertEqual(UTF8Cut.whole(Array(text[..<(start + length)])), start + length, "\(character) whole")
        }
        // Not UTF-8 at all: nothing is held back forever.
        XCTAssertEqual(UTF8Cut.whole([0x80, 0x80, 0x80, 0x80]), 4)
    }

    func testOnlyTheLastPushWaitingForABuildMayTakeItOffTheQueue() throws {
        let waiters = BuildWaiters()
        let build = try KID(parsing: "K-" + String(repeating: "ab", count: 32))
        waiters.add(build)
        waiters.add(build)
        XCTAssertFalse(waiters.leave(build), "another push still waits")
        XCTAssertTrue(waiters.leave(build), "the last one")
        waiters.add(build)
        XCTAssertTrue(waiters.leave(build), "counted from zero again")
    }
}
