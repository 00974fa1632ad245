import XCTest
import KbuildState
import KbuildCore

/// The schema's builders and its one parser agree, and a name outside the
/// schema is `other`, never mistaken for something it is not.
final class SchemaTests: XCTestCase {
    func testEveryBuilderParsesBackToWhatItNames() throws {
        let build = KID(hashing: Array("build".utf8))
        let table: [(RefName, Schema.Key)] = [
            (try Schema.app("web"), .app("web")),
            (try Schema.release("web"), .appField("web", .release)),
            (try Schema.config("web"), .appField("web", .config)),
            (try Schema.releasePhase("web"), .appField("web", .releasePhase)),
            (try Schema.buildCache("web"), .appField("web", .buildCache)),
            (try Schema.appDependency("web", build), .appDependency(app: "web", key: build.hex)),
            (try Schema.appBuildpack("web", hash: "abc"), .appBuildpack(app: "web", hash: "abc")),
            (try Schema.buildQueued(build), .buildQueued(build)),
            (try Schema.buildClaim(build), .buildClaim(build)),
            (try Schema.buildResult(build), .buildResult(build)),
            (try Schema.sharedDependency(build), .sharedDependency(build.hex)),
            (try Schema.commit("0123abcd"), .commit("0123abcd")),
            (try Schema.node("n1"), .node("n1")),
            (try Schema.assignment("n1"), .assignment(node: "n1")),
            (try Schema.status("n1"), .status(node: "n1")),
            (try Schema.registryTag("web", "latest"), .registryTag(repository: "web", tag: "latest")),
            (try Schema.registryTag("team/web", "v1.2"), .registryTag(repository: "team/web", tag: "v1.2")),
            (try Schema.stack("debian-13"), .stack("debian-13")),
            (try Schema.buildpack("python"), .buildpack("python")),
            (try Schema.token("ci"), .token("ci")),
            (try Schema.pin("keep/this"), .pin("keep/this")),
            (try Schema.volume("web", "data"), .volume(app: "web", name: "data")),
            (try Schema.addon("web-postgres"), .addon("web-postgres")),
            (try Schema.backup("web-postgres", "b001"), .backup(addon: "web-postgres", id: "b001")),
        ]
        for (name, key) in table { XCTAssertEqual(Schema.Key(name), key, name.rawValue) }
        for field in Schema.AppField.allCases {
            XCTAssertEqual(Schema.Key(try Schema.app("web", field)), .appField("web", field), field.rawValue)
        }
    }

    func testNamesOutsideTheSchemaAreOther() throws {
        for text in ["apps/web/unknown", "apps/web/release/extra", "builds/queue/not-a-kid", "builds/other/x", "nodes/n1/other",
                     "nodes/n1/status/x", "registry/web", "registry/web:v1/x", "stacks/a/b", "something", "commits/a/b"] {
            XCTAssertEqual(Schema.Key(try RefName(text)), .other, text)
        }
    }
}
