// fuzz-modules: Releases KbuildState Builds KbuildCore
// A pushed app.json → AppJSON.healthchecks (read before the build; a bad one rejects the push).
import KbuildCore
import Releases
import KbuildState

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let refused = { (error: any Error) in (error as? KbuildError)?.code == .invalidArgument }
    guard let checks: [String: HealthCheck] = parsedOrRefused({ try AppJSON.healthchecks(fuzzBytes(start, count)) }, isRefusal: refused) else { return 0 }
    for (type, check) in checks {
        if let path = check.path {
            require(path.hasPrefix("/") && path.utf8.count <= 1024, "\(type): path \(path.debugQuoted)")
            require(!path.contains(where: { $0.isWhitespace || $0.isNewline }), "\(type): path \(path.debugQuoted) has whitespace")
        }
        require((0.1...300).contains(check.timeout), "\(type): timeout \(check.timeout)")
        require((0...600).contains(check.initialDelay), "\(type): initialDelay \(check.initialDelay)")
        require((1...1000).contains(check.attempts), "\(type): attempts \(check.attempts)")
    }
    return 0
}
