// fuzz-modules: GitGateway KbuildCore
// SSH_ORIGINAL_COMMAND → GitShell.parse: the only thing an SSH key may run.
@testable import GitGateway
import KbuildCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let command = fuzzText(start, count)
    let refused = { (error: any Error) in (error as? KbuildError)?.code == .invalidArgument }
    guard let parsed: (service: GitShell.Service, app: String) = parsedOrRefused({ try GitShell.parse(command) }, isRefusal: refused) else { return 0 }
    // Only receive-pack and upload-pack, and only of an app: a name, never a path.
    let prefixes = parsed.service == .receivePack
        ? ["git-receive-pack ", "git receive-pack "] : ["git-upload-pack ", "git upload-pack "]
    require(prefixes.contains { command.hasPrefix($0) }, "\(parsed.service) from \(command.debugQuoted)")
    require(Names.isAppName(parsed.app), "app \(parsed.app.debugQuoted) is not an app name")
    require(!parsed.app.contains("/") && !parsed.app.contains(".."), "app \(parsed.app.debugQuoted) is a path")
    // The forms git sends for that repository give the same answer.
    for form in ["git-\(parsed.service.rawValue) '\(parsed.app).git'", "git \(parsed.service.rawValue) '/\(parsed.app).git'",
                 "git-\(parsed.service.rawValue) \(parsed.app)"] {
        let again = try? GitShell.parse(form)
        require(again?.service == parsed.service && again?.app == parsed.app, "\(form.debugQuoted) parses differently")
    }
    return 0
}
