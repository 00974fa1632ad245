// fuzz-modules: Builds KbuildCore
// An app's .buildpacks → BuildFiles.parseBuildpacksFile.
import Builds
import Foundation
import KbuildCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = fuzzText(start, count)
    let refused = { (error: any Error) in (error as? KbuildError)?.code == .invalidArgument }
    guard let choices: [BuildFiles.BuildpackChoice] = parsedOrRefused({ try BuildFiles.parseBuildpacksFile(text) }, isRefusal: refused) else { return 0 }
    require(!choices.isEmpty, "no buildpack, yet no error")
    var lines: [String] = []
    for choice in choices {
        switch choice {
        case .named(let name):
            require(Names.isStoreName(name), "buildpack name \(name.debugQuoted)")
            lines.append(name)
        case .inTree(let path):
            // A path in the app's tree: it must stay inside it and out of .git.
            require(!path.isEmpty, "empty path")
            for part in path {
                require(!part.isEmpty && part != "." && part != "..", "path part \(part.debugQuoted)")
                require(!part.contains("/"), "path part \(part.debugQuoted) has a slash")
                require(part.lowercased() != ".git", "path into \(part)")
                require(!part.contains(where: \.isNewline), "path part \(part.debugQuoted) has a line break")
            }
            lines.append("./" + path.joined(separator: "/"))
        }
    }
    // Lines are trimmed at their ends only, so a path whose last part ends in
    // whitespace ("./bp\t/.") cannot be written back as it was read.
    let trailingSpace = choices.contains { choice in
        guard case .inTree(let path) = choice, let last = path.last?.unicodeScalars.last else { return false }
        return CharacterSet.whitespaces.contains(last)
    }
    if trailingSpace { return 0 }
    let written = lines.map { $0 + "\n" }.joined()
    let again = try? BuildFiles.parseBuildpacksFile(written)
    require(again == choices, "\(written.debugQuoted) reads differently")
    return 0
}
