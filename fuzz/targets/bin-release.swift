// fuzz-modules: Builds KbuildCore
// What a buildpack's bin/release prints (YAML-ish) → BuildFiles.parseRelease.
import Builds
import KbuildCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = fuzzText(start, count)
    let refused = { (error: any Error) in (error as? KbuildError)?.code == .invalidArgument }
    guard let release: BuildFiles.Release = parsedOrRefused({ try BuildFiles.parseRelease(text) }, isRefusal: refused) else { return 0 }
    for (name, value) in release.configVars {
        require(BuildFiles.isEnvironmentName(name), "config var name \(name.debugQuoted)")
        require(!value.contains(where: \.isNewline), "config var \(name) has a line break")
    }
    for (type, command) in release.processTypes {
        require(BuildFiles.isProcessType(type), "process type \(type.debugQuoted)")
        require(!command.isEmpty, "process type \(type) has an empty command")
        require(!command.contains(where: \.isNewline), "process type \(type) has a line break")
    }
    // Written back with every value single-quoted, it reads the same (unless a
    // value starts with a combining mark, which would join the quote before it:
    // unquote compares Characters, so "'\u{301}x'" stays quoted).
    let quotable = { (value: String) in ("'" + value + "'").first == "'" }
    guard release.configVars.values.allSatisfy(quotable), release.processTypes.values.allSatisfy(quotable) else { return 0 }
    var written = "---\nconfig_vars:\n"
    for (name, value) in release.configVars.sorted(by: { $0.key < $1.key }) { written += "  \(name): '\(value)'\n" }
    written += "default_process_types:\n"
    for (type, command) in release.processTypes.sorted(by: { $0.key < $1.key }) { written += "  \(type): '\(command)'\n" }
    let again = try? BuildFiles.parseRelease(written)
    require(again == release, "\(written.debugQuoted) reads differently")
    return 0
}
