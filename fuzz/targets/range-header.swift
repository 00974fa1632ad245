// fuzz-modules: KbuildServer
// A GET's Range header (objects, registry blobs) → ByteRangeRequest.parse.
// The first byte picks the object's size (0…127, or 8 more bytes for a large one).
import Foundation
@testable import KbuildServer

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var bytes = fuzzBytes(start, count)[...]
    guard let first = bytes.popFirst() else { return 0 }
    var size = UInt64(first)
    if first >= 0x80 {
        guard bytes.count >= 8 else { return 0 }
        size = bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        bytes = bytes.dropFirst(8)
    }
    let header = String(decoding: bytes, as: UTF8.self)
    switch ByteRangeRequest.parse(header, size: size) {
    case .whole, .unsatisfiable:
        break
    case .partial(let range):
        // Something to send, inside the object.
        require(!range.isEmpty, "empty range \(range) of \(size) from \(header.debugDescription)")
        require(range.upperBound <= size, "range \(range) past \(size) from \(header.debugDescription)")
        require(header.trimmingCharacters(in: .whitespaces).hasPrefix("bytes="), "range from \(header.debugDescription)")
    }
    require(ByteRangeRequest.parse(nil, size: size) == .whole, "no header is not .whole")
    return 0
}
