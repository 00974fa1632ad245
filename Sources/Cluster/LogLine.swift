public import Foundation

/// One line of a process's log as its helper writes it:
/// `2026-11-24T10:00:00.123456Z o text` (o: stdout, e: stderr, k: kbuild's own note).
/// Parsed by hand, as fixed-width fields, because logs are read by the gigabyte.
public struct LogLine: Sendable, Equatable {
    public var time: Date
    public var tag: UInt8
    public var text: Substring

    /// The width of the time and tag before the text.
    static let head = 30

    public static func format(_ time: Date, tag: Character, _ text: String) -> String {
        let t = time.timeIntervalSince1970
        var seconds = Int(t.rounded(.down))
        var micros = Int(((t - Double(seconds)) * 1_000_000).rounded())
        if micros == 1_000_000 { seconds += 1; micros = 0 }
        let (y, m, d) = civil(fromDays: seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400)
        let s = ((seconds % 86400) + 86400) % 86400
        func pad(_ v: Int, _ n: Int) -> String {
            let digits = String(v)
            return String(repeating: "0", count: max(0, n - digits.count)) + digits
        }
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(s / 3600, 2)):\(pad(s / 60 % 60, 2)):\(pad(s % 60, 2)).\(pad(micros, 6))Z \(tag) \(text)"
    }

    public static func parse(_ line: Substring) -> LogLine? {
        let u = line.utf8
        guard u.count >= head - 1 else { return nil }
        var i = u.startIndex
        func digits(_ n: Int) -> Int? {
            var v = 0
            for _ in 0..<n {
                let c = u[i]
                guard c >= 0x30 && c <= 0x39 else { return nil }
                v = v * 10 + Int(c - 0x30)
                i = u.index(after: i)
            }
            return v
        }
        func skip(_ c: UInt8) -> Bool {
            guard u[i] == c else { return false }
            i = u.index(after: i)
            return true
        }
        guard let y = digits(4), skip(0x2d), let mo = digits(2), skip(0x2d), let d = digits(2), skip(0x54),
              let h = digits(2), skip(0x3a), let mi = digits(2), skip(0x3a), let s = digits(2), skip(0x2e),
              let us = digits(6), skip(0x5a), skip(0x20) else { return nil }
        let tag = u[i]
        i = u.index(after: i)
        let text: Substring
        if i == u.endIndex {
            text = ""
        } else {
            guard u[i] == 0x20 else { return nil }
            text = line[u.index(after: i)...]
        }
        let days = days(fromCivil: y, mo, d)
        let seconds = Double(days * 86400 + h * 3600 + mi * 60 + s) + Double(us) / 1_000_000
        return LogLine(time: Date(timeIntervalSince1970: seconds), tag: tag, text: text)
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    static func days(fromCivil y0: Int, _ m: Int, _ d: Int) -> Int {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    static func civil(fromDays z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
