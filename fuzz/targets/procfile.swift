// fuzz-modules: Builds KbuildCore
// An app's Procfile → BuildFiles.parseProcfile.
import Builds
import Foundation
import KbuildCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = fuzzText(start, count)
    let refused = { (error: any Error) in (error as? KbuildError)?.code == .invalidArgument }
    guard let entries: [(type: String, command: String)] = parsedOrRefused({ try BuildFiles.parseProcfile(text) }, isRefusal: refused) else { return 0 }
    var seen = Set<String>()
    for (type, command) in entries {
        require(BuildFiles.isProcessType(type), "process type \(type.debugQuoted)")
        require(!type.isEmpty && type.utf8.count <= 63, "process type of \(type.utf8.count) bytes")
        require(seen.insert(type).inserted, "process type \(type) twice")
        require(!command.isEmpty, "\(type) has an empty command")
        require(!command.contains(where: \.isNewline), "\(type)'s command has a line break")
        require(command.trimmingCharacters(in: .whitespaces) == command, "\(type)'s command \(command.debugQuoted) is not trimmed")
    }
    // Written back as `type: command` lines, it reads the same.
    let written = entries.map { "\($0.type): \($0.command)\n" }.joined()
    let again = try? BuildFiles.parseProcfile(written)
    require(again.map { $0.map(\.type) == entries.map(\.type) && $0.map(\.command) == entries.map(\.command) } == true,
            "\(written.debugQuoted) reads differently")
    return 0
}
