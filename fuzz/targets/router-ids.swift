// fuzz-modules: Router
// A request's X-Request-Id and traceparent headers → RequestID.isValid and
// TraceParent.isValid (an invalid one is replaced, a valid one is passed on).
@testable import Router

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let value = fuzzText(start, count)
    if RequestID.isValid(value) {
        // Safe to log on one line and to pass to the backend.
        require(!value.isEmpty && value.utf8.count <= 128, "request id of \(value.utf8.count) bytes")
        require(value.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && $0 != 0x2f }, "request id \(value.debugDescription)")
    }
    if TraceParent.isValid(value) {
        let bytes = Array(value.utf8)
        require(bytes.count >= 55, "traceparent of \(bytes.count) bytes")
        // Later versions may carry anything after a '-' at 55 (passed on as the client sent it).
        require(bytes.prefix(55).allSatisfy { $0 > 0x20 && $0 < 0x7f }, "traceparent \(value.debugDescription)")
        let fields = value.split(separator: "-", omittingEmptySubsequences: false)
        require(fields.count >= 4 && fields[0].count == 2 && fields[1].count == 32 && fields[2].count == 16 && fields[3].count == 2,
                "traceparent \(value.debugDescription)")
        require(fields[0] != "ff" && (fields[0] != "00" || fields.count == 4), "traceparent version in \(value.debugDescription)")
        require(fields[1].contains { $0 != "0" } && fields[2].contains { $0 != "0" }, "all-zero id in \(value.debugDescription)")
    }
    return 0
}
