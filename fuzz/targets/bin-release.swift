// fuzz-modules: Builds KbuildCore Yams
// What a buildpack's bin/release prints (YAML, read with Yams) → BuildFiles.parseRelease.
import Builds
import Foundation
import KbuildCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = fuzzText(start, count)
    let refused = { (error: any Error) in (error as? KbuildError)?.code == .invalidArgument }
    guard let release: BuildFiles.Release = parsedOrRefused({ try BuildFiles.parseRelease(text) }, isRefusal: refused) else { return 0 }
    for (name, value) in release.configVars {
        require(BuildFiles.isEnvironmentName(name), "config var name \(name.debugQuoted)")
        require(!value.utf8.contains(0), "config var \(name) has a NUL (no environment can hold it)")
    }
    for (type, command) in release.processTypes {
        require(BuildFiles.isProcessType(type), "process type \(type.debugQuoted)")
        require(!command.isEmpty, "process type \(type) has an empty command")
        require(!command.utf8.contains(0), "process type \(type) has a NUL")
    }
    // Written back as YAML with every value double-quoted and escaped, it reads the same.
    func quoted(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case " "..."~": out.unicodeScalars.append(scalar)
            default: out += scalar.value > 0xFFFF ? String(format: "\\U%08X", scalar.value) : String(format: "\\u%04X", scalar.value)
            }
        }
        return out + "\""
    }
    var written = "---\nconfig_vars:\n"
    for (name, value) in release.configVars.sorted(by: { $0.key < $1.key }) { written += "  \(name): \(quoted(value))\n" }
    written += "default_process_types:\n"
    for (type, command) in release.processTypes.sorted(by: { $0.key < $1.key }) { written += "  \(type): \(quoted(command))\n" }
    let again = try? BuildFiles.parseRelease(written)
    require(again == release, "\(written.debugQuoted) reads differently")
    return 0
}
