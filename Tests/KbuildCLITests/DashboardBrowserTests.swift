import Foundation
import XCTest

/// The dashboard end to end in a real browser: `browser-tests/dashboard_test.py`
/// drives Debian's Chromium with Playwright (both installed by
/// scripts/install-deps.sh) against this `kbuild up`, with real git pushes.
/// It logs in (a bad token, a one-time link, an app token), watches a push
/// reach the builds page and its log, rolls back from the app page and sees v1
/// served, kills a process and sees it restart, cuts the event stream and
/// sees the missed changes replayed in order, checks escaping (a commit
/// message that is a script), CSRF, config values shown on purpose, scale,
/// config, domains, logs (live, search, download), nodes, trace, time travel,
/// and runs axe on every page (no critical or serious findings). Screenshots
/// of each page land in .build/test-artifacts/dashboard.
final class DashboardBrowserTests: XCTestCase {
    func testTheDashboardInABrowser() throws {
        let data = try makeData("dash")
        _ = try startKbuildUp(self, data: data)
        let work = try tempDir(self, "dash-src")
        let artifacts = repositoryRoot + "/.build/test-artifacts/dashboard"
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        let r = try sh("/usr/bin/env", ["python3", repositoryRoot + "/browser-tests/dashboard_test.py", "--kbuild", kbuildBinary, "--data", data,
                                        "--work", work, "--examples", repositoryRoot + "/examples", "--artifacts", artifacts])
        XCTAssertEqual(r.status, 0, "the browser suite failed:\n\(r.stderr)\n\(r.stdout)")
        let last = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        let summary = try XCTUnwrap(try? JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], "no summary: \(r.stdout)")
        XCTAssertGreaterThanOrEqual(summary["checks"] as? Int ?? 0, 30, "\(summary)")
        let pages = summary["pages"] as? [String] ?? []
        XCTAssertEqual(Set(pages), ["login", "overview", "release", "builds", "build", "app", "logs", "nodes", "trace", "app-as-of"])
        for page in pages { XCTAssertTrue(FileManager.default.fileExists(atPath: "\(artifacts)/\(page).png"), "screenshot of \(page)") }
        let axe = summary["axe"] as? [String: [String: Int]] ?? [:]
        XCTAssertGreaterThanOrEqual(axe.count, 9, "\(axe)")
        for (page, result) in axe { XCTAssertEqual(result["critical_or_serious"], 0, "axe on \(page)") }
    }
}
