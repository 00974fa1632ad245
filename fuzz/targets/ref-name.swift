// fuzz-modules: KbuildState KbuildCore
// A ref name (from the API, registry tags, app and branch names) → RefName.init,
// checked against the grammar its doc comment states.
import Foundation
import KbuildCore
import KbuildState

/// RefName's documented grammar, written out independently of its code.
func documentedValid(_ text: String) -> Bool {
    let bytes = Array(text.utf8)
    guard !bytes.isEmpty, bytes.count <= 1024, bytes.first != 0x2f, bytes.last != 0x2f else { return false }
    return bytes.split(separator: 0x2f, omittingEmptySubsequences: false).allSatisfy { segment in
        guard (1...255).contains(segment.count), !segment.elementsEqual([0x2e]), !segment.elementsEqual([0x2e, 0x2e]) else { return false }
        return segment.allSatisfy { c in
            (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || Array("._-+@:".utf8).contains(c)
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = fuzzText(start, count)
    let name: RefName
    do {
        name = try RefName(text)
    } catch let error as KbuildError {
        require(error.code == .invalidArgument, "refused with \(error.code)")
        require(!documentedValid(text), "refused \(text.debugQuoted), which the grammar allows: \(error)")
        return 0
    } catch {
        require(false, "threw \(error), not a KbuildError")
        return 0
    }
    require(documentedValid(text), "accepted \(text.debugQuoted), which the grammar refuses")
    require(name.rawValue == text, "rawValue \(name.rawValue.debugQuoted) of \(text.debugQuoted)")
    // Stored as JSON and read back, it is the same name.
    let json = try! JSONEncoder().encode([name])
    require((try? JSONDecoder().decode([RefName].self, from: json)) == [name], "JSON of \(text.debugQuoted)")
    // Every leading run of its segments is a name it lies under.
    let segments = text.split(separator: "/")
    for n in 1...segments.count {
        let prefix = try! RefName(segments.prefix(n).joined(separator: "/"))
        require(name.isUnder(prefix), "\(name) not under \(prefix)")
    }
    if let child = try? name.appending("x") { require(child.isUnder(name) && child != name, "\(child) vs \(name)") }
    return 0
}
