import XCTest
import KbuildState
import KbuildCore

/// The pure parts of add-ons: kinds, attachment names, service addresses, URLs.
final class AddonRecordTests: XCTestCase {
    func testKindsAndTheirAliases() throws {
        XCTAssertEqual(try AddonKind(parsing: "postgres"), .postgres)
        XCTAssertEqual(try AddonKind(parsing: "heroku-postgresql"), .postgres)
        XCTAssertEqual(try AddonKind(parsing: "redis"), .redis)
        XCTAssertEqual(AddonKind.postgres.defaultAs, "DATABASE")
        XCTAssertEqual(AddonKind.redis.port, 6379)
        XCTAssertThrowsError(try AddonKind(parsing: "mysql")) { XCTAssertTrue("\($0)".contains("unknown add-on kind \"mysql\"")) }
    }

    func testAttachmentNames() throws {
        for good in ["DATABASE", "CACHE", "HEROKU_POSTGRESQL_RED", "DB2"] { XCTAssertNoThrow(try AddonRecord.check(attachmentName: good), good) }
        for bad in ["", "database", "2DB", "DB-1", "KBUILD_DB", "DB URL", String(repeating: "A", count: 61)] {
            XCTAssertThrowsError(try AddonRecord.check(attachmentName: bad), bad)
        }
        XCTAssertEqual(AddonAttachment(app: "web", name: "DATABASE").variable, "DATABASE_URL")
    }

    func testServiceAddressesStayInTheirRangeAndSkipNetworkAndBroadcast() {
        var seen = Set<String>()
        for n in [0, 1, 253, 254, 255, 64_769, 129_031, 129_032, 129_033, 1_000_000] {
            let a = ServiceAddress.address(n)
            let parts = a.split(separator: ".").compactMap { Int($0) }
            XCTAssertEqual(parts.count, 4, a)
            XCTAssertEqual(parts[0], 198, a)
            XCTAssertTrue(parts[1] == 18 || parts[1] == 19, a)
            XCTAssertTrue((1...254).contains(parts[3]), a)
            seen.insert(a)
        }
        XCTAssertEqual(Set((0..<10_000).map(ServiceAddress.address)).count, 10_000, "distinct for distinct numbers")
        XCTAssertGreaterThan(seen.count, 5)
    }

    func testURLs() {
        let service = ServiceAddress(address: "198.18.0.7", port: 5432)
        let pg = AddonRecord(name: "web-postgres", addon: .postgres, owner: "web", stack: "debian-12-addons", version: "15", service: service,
                             volume: "data", attachments: [], createdBy: "test")
        XCTAssertEqual(pg.url(password: "ab12"), "postgres://kbuild:ab12@198.18.0.7:5432/kbuild")
        var redis = pg
        redis.addon = .redis
        redis.service.port = 6379
        XCTAssertEqual(redis.url(password: "ab12"), "redis://default:ab12@198.18.0.7:6379")
    }
}
