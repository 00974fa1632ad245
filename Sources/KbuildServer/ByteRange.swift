import Foundation

/// What a `Range` request header asks of an object of a known size (RFC 9110 §14).
public enum ByteRangeRequest: Equatable, Sendable {
    /// No usable range: send everything (also for multiple ranges, which we do not serve).
    case whole
    /// One satisfiable range.
    case partial(Range<UInt64>)
    /// A range that starts at or past the end: 416 with `Content-Range: bytes */size`.
    case unsatisfiable

    /// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`.
    public static func parse(_ header: String?, size: UInt64) -> ByteRangeRequest {
        guard let header = header?.trimmingCharacters(in: .whitespaces), header.hasPrefix("bytes=") else { return .whole }
        let spec = header.dropFirst(6)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .whole }
        let first = spec[..<dash].trimmingCharacters(in: .whitespaces)
        let last = spec[spec.index(after: dash)...].trimmingCharacters(in: .whitespaces)
        if first.isEmpty {
            guard let n = UInt64(last) else { return .whole }
            guard n > 0, size > 0 else { return .unsatisfiable }
            return .partial((size - min(n, size))..<size)
        }
        guard let start = UInt64(first) else { return .whole }
        guard start < size else { return .unsatisfiable }
        if last.isEmpty { return .partial(start..<size) }
        guard let end = UInt64(last), end >= start else { return .whole }
        return .partial(start..<min(end, size - 1) + 1)
    }
}
