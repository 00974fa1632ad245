public import Foundation

/// Byte sizes: 512, 64K, 256M, 1G, 1.5G (powers of 1024; a trailing B or iB is allowed).
public func parseBytes(_ text: String, what: String) throws -> UInt64 {
    var body = text.uppercased()
    if body.hasSuffix("IB") { body.removeLast(2) } else if body.hasSuffix("B") { body.removeLast() }
    let scales: [Character: Double] = ["K": 1024, "M": 1_048_576, "G": 1_073_741_824, "T": 1_099_511_627_776]
    var scale = 1.0
    if let last = body.last, let s = scales[last] { scale = s; body.removeLast() }
    guard let n = Double(body), n.isFinite, n >= 0, n * scale < 1.8e19 else {
        throw KbuildError(.invalidArgument, "invalid \(what) \(text.debugDescription): want a size such as 256M or 1G")
    }
    return UInt64(n * scale)
}

/// Parses durations such as 30s, 10m, 1h, 7d (a bare number is seconds).
public func parseDuration(_ text: String) throws -> TimeInterval {
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    var body = Substring(text)
    var scale = 1.0
    if let last = body.last, let u = units[last] { scale = u; body = body.dropLast() }
    guard let n = Double(body), n >= 0, n.isFinite else {
        throw KbuildError(.invalidArgument, "failed to parse duration \(text.debugQuoted): want a number with s, m, h or d (e.g. 1h)")
    }
    return n * scale
}

