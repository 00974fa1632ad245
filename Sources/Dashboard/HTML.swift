import Foundation

/// HTML text. Interpolating a `String` (or a number) escapes it; only an
/// `HTML` value goes in as it is. So a page made of `HTML` literals cannot
/// forget to escape a commit message, an app name, a config key or a log
/// line: text from tenants is never markup.
struct HTML: Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    var text: String

    init(raw text: String) { self.text = text }
    init(stringLiteral value: String) { text = value }
    init(stringInterpolation: StringInterpolation) { text = stringInterpolation.text }
    var description: String { text }

    static let empty = HTML(raw: "")

    struct StringInterpolation: StringInterpolationProtocol {
        var text = ""
        init(literalCapacity: Int, interpolationCount: Int) { text.reserveCapacity(literalCapacity + 16 * interpolationCount) }
        mutating func appendLiteral(_ literal: String) { text += literal }
        mutating func appendInterpolation(_ value: String) { HTML.escape(value, into: &text) }
        mutating func appendInterpolation(_ value: Substring) { HTML.escape(String(value), into: &text) }
        mutating func appendInterpolation(_ value: some BinaryInteger) { text += String(value) }
        mutating func appendInterpolation(_ value: HTML) { text += value.text }
        mutating func appendInterpolation(_ values: [HTML]) { for v in values { text += v.text } }
        mutating func appendInterpolation(_ value: HTML?) { if let value { text += value.text } }
    }

    /// `&`, `<`, `>`, both quotes; control characters (but tab and newline) become U+FFFD,
    /// so an escape sequence in a log line cannot reach the page as one.
    static func escape(_ value: String, into out: inout String) {
        for scalar in value.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case "\t", "\n": out.unicodeScalars.append(scalar)
            case _ where scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value): out += "\u{FFFD}"
            default: out.unicodeScalars.append(scalar)
            }
        }
    }

    static func escape(_ value: String) -> String {
        var out = ""
        escape(value, into: &out)
        return out
    }

    /// A query string value (for links).
    static func query(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? ""
    }

    static func join(_ parts: [HTML], _ separator: String = "") -> HTML {
        HTML(raw: parts.map(\.text).joined(separator: separator))
    }
}

/// Dates and sizes as the pages show them.
enum Show {
    static func time(_ date: Date?) -> HTML {
        guard let date else { return "–" }
        let iso = ISO8601DateFormatter().string(from: date)
        return "<time datetime=\"\(iso)\">\(iso.replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: " UTC"))</time>"
    }

    static func age(_ date: Date?, now: Date = Date()) -> String {
        guard let date else { return "never" }
        let s = Int(now.timeIntervalSince(date))
        if s < 120 { return "\(max(s, 0)) s ago" }
        if s < 7200 { return "\(s / 60) min ago" }
        if s < 172_800 { return "\(s / 3600) h ago" }
        return "\(s / 86400) days ago"
    }

    static func short(_ text: String, _ n: Int = 12) -> String { text.count > n ? String(text.prefix(n)) : text }
}
