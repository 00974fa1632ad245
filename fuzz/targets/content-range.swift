// fuzz-modules: KbuildServer
// A registry upload chunk's Content-Range header → RegistryInput.uploadOffset.
@testable import KbuildServer

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = fuzzBytes(start, count)
    let header = String(decoding: bytes, as: UTF8.self)
    if let offset = RegistryInput.uploadOffset(contentRange: header) {
        // The offset is the number before the first '-' (after "bytes ").
        let text = header.hasPrefix("bytes ") ? header.dropFirst(6) : Substring(header)
        let digits = text.prefix { $0 != "-" }.drop { $0 == "+" }
        require(!digits.isEmpty && digits.allSatisfy(\.isASCII) && digits.allSatisfy(\.isNumber), "offset \(offset) from \(header.debugDescription)")
        require(UInt64(digits) == offset, "offset \(offset) from \(header.debugDescription)")
    }
    // The forms clients send read as their start.
    if bytes.count >= 16 {
        let a = bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let b = bytes[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        require(RegistryInput.uploadOffset(contentRange: "\(a)-\(b)") == a, "\(a)-\(b)")
        require(RegistryInput.uploadOffset(contentRange: "bytes \(a)-\(b)/\(b &+ 1)") == a, "bytes \(a)-\(b)/…")
        require(RegistryInput.uploadOffset(contentRange: "bytes \(a)-\(b)/*") == a, "bytes \(a)-\(b)/*")
    }
    return 0
}
