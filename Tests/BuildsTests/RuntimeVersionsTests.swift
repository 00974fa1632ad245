import XCTest
@testable import Builds
import KbuildState

/// Version files against a stack's runtimes: table tests of the pure checks.
final class RuntimeVersionsTests: XCTestCase {
    let stacks = ["debian-12": ["python": "3.11.2", "node": "18.19.0", "go": "1.19.8"],
                  "debian-13": ["python": "3.13.5", "node": "20.19.2", "go": "1.24.4"],
                  "busybox": [:]]

    func request(_ runtime: String, _ wanted: String) -> RuntimeVersions.Request {
        RuntimeVersions.Request(runtime: runtime, wanted: wanted, file: "test")
    }

    func testNodeRanges() throws {
        for (range, version, fits) in [
            (">=18", "20.19.2", true), (">=21", "20.19.2", false), ("^20.1", "20.19.2", true), ("^20.20", "20.19.2", false),
            ("^18 || ^20", "20.19.2", true), ("~20.19.0", "20.19.2", true), ("~20.18", "20.19.2", false), ("20.x", "20.19.2", true),
            ("20", "20.19.2", true), ("18", "20.19.2", false), ("*", "18.19.0", true), (">=18 <20", "20.19.2", false),
            (">=18 <20", "18.19.0", true), (">= 18", "18.19.0", true), ("16 - 18", "18.19.0", true), ("16 - 18", "20.19.2", false),
            (">20", "20.19.2", false), ("<=20", "20.19.2", true), ("v20", "20.19.2", true), ("^0.1", "0.1.5", true), ("^0.1", "0.2.0", false),
        ] {
            XCTAssertEqual(try RuntimeVersions.satisfies(version, request("node", range)), fits, "\(range) vs \(version)")
        }
        XCTAssertThrowsError(try RuntimeVersions.satisfies("20.19.2", request("node", "latest")))
        XCTAssertThrowsError(try RuntimeVersions.satisfies("20.19.2", request("node", "!20")))
    }

    func testPythonAndGo() throws {
        XCTAssertTrue(try RuntimeVersions.satisfies("3.13.5", request("python", "3.13")))
        XCTAssertTrue(try RuntimeVersions.satisfies("3.13.5", request("python", "3.13.1")))
        XCTAssertFalse(try RuntimeVersions.satisfies("3.13.5", request("python", "3.12")))
        XCTAssertThrowsError(try RuntimeVersions.satisfies("3.13.5", request("python", "3")))
        XCTAssertTrue(try RuntimeVersions.satisfies("1.24.4", request("go", "1.22")))
        XCTAssertTrue(try RuntimeVersions.satisfies("1.24.4", request("go", "1.24.4")))
        XCTAssertFalse(try RuntimeVersions.satisfies("1.19.8", request("go", "1.21.0")))
    }

    func testRequestsFromFiles() throws {
        let r = try RuntimeVersions.requests(files: [".python-version": "# pinned\n3.12\n", "package.json": #"{"engines":{"node":">=20"}}"#,
                                                     "go.mod": "module x\n\ngo 1.22\n"])
        XCTAssertEqual(r.map(\.runtime), ["python", "node", "go"])
        XCTAssertEqual(r.map(\.wanted), ["3.12", ">=20", "1.22"])
        XCTAssertEqual(try RuntimeVersions.requests(files: ["runtime.txt": "python-3.11.2\n"]).first?.wanted, "3.11.2")
        XCTAssertEqual(try RuntimeVersions.requests(files: ["package.json": #"{"name":"x"}"#]), [])
        XCTAssertThrowsError(try RuntimeVersions.requests(files: ["runtime.txt": "ruby-3\n"]))
        XCTAssertThrowsError(try RuntimeVersions.requests(files: ["package.json": "{not json"])) { error in
            XCTAssertTrue("\(error)".contains("package.json is not valid JSON"), "\(error)")
        }
    }

    func testTheMessageNamesWhatWasAskedWhatTheStackHasAndWhereItIs() throws {
        XCTAssertNoThrow(try RuntimeVersions.check([request("python", "3.13")], app: "a", stack: "debian-13", stacks: stacks))
        XCTAssertThrowsError(try RuntimeVersions.check([request("python", "3.11")], app: "shop", stack: "debian-13", stacks: stacks)) { error in
            let text = "\(error)"
            for part in ["asks for Python 3.11", "the stack debian-13 has Python 3.13.5", "the stack debian-12 has 3.11.2", "kbuild apps:set shop stack=debian-12"] {
                XCTAssertTrue(text.contains(part), "\(part): \(text)")
            }
        }
        XCTAssertThrowsError(try RuntimeVersions.check([request("python", "3.9")], app: "a", stack: "debian-13", stacks: stacks)) { error in
            XCTAssertTrue("\(error)".contains("no stack here has it"), "\(error)")
            XCTAssertTrue("\(error)".contains("debian-12: 3.11.2, debian-13: 3.13.5"), "the versions available: \(error)")
        }
        XCTAssertThrowsError(try RuntimeVersions.check([request("node", ">=20")], app: "a", stack: "busybox", stacks: stacks)) { error in
            XCTAssertTrue("\(error)".contains("the stack busybox has no Node.js; the stack debian-13 has 20.19.2"), "\(error)")
        }
        XCTAssertThrowsError(try RuntimeVersions.check([request("go", "1.25")], app: "a", stack: "debian-13", stacks: stacks))
    }
}
