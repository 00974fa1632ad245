import ArgumentParser
import Foundation
import KbuildClient
import KbuildCore
import KbuildState

/// `kbuild dashboard`: a one-time URL that logs a browser in to the
/// dashboard with this CLI's token (as `nomad ui -authenticate` does), so
/// the token itself is never typed or pasted.
struct DashboardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Print a one-time URL that logs a browser in to the dashboard as this CLI's token.",
        discussion: "The link works once, within five minutes; the session it makes lasts 12 hours (log out in the page ends it). The dashboard is at / on the API's URL."
    )
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print the URL only.") var quiet = false

    func run() async throws {
        let client = try global.client()
        let code: API.LoginCode = try await client.send(.POST, "/dashboard/login-codes", [String: String]())
        let url = client.base + code.path
        if quiet { return say(url) }
        say("Open this in a browser within 5 minutes (it works once):\n  \(url)")
    }
}
