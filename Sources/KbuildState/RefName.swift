import KbuildCore

/// A ref's name: a path of segments such as `apps/web/release`.
///
/// Segments are 1 to 255 bytes of letters, digits and `. _ - + @ :`, never
/// `.` or `..`; the whole name is at most 1,024 bytes and never starts or ends
/// with `/`. Validated once, here: everything downstream holds a `RefName`.
public struct RefName: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public let rawValue: String
    public static let maxLength = 1024

    public init(_ text: String) throws {
        let bytes = Array(text.utf8)
        func bad(_ why: String) -> KbuildError {
            KbuildError(.invalidArgument, "failed to parse ref name \(text.debugQuoted): \(why)")
        }
        guard !bytes.isEmpty else { throw bad("empty") }
        guard bytes.count <= RefName.maxLength else { throw bad("\(bytes.count) bytes, at most \(RefName.maxLength)") }
        if let c = bytes.first(where: { $0 < 0x20 || $0 == 0x7f }) {
            throw bad(c == 0 ? "contains NUL" : "contains control character 0x\(String(c, radix: 16))")
        }
        guard bytes.first != 0x2f else { throw bad("absolute path: must not start with /") }
        guard bytes.last != 0x2f else { throw bad("must not end with /") }
        for segment in bytes.split(separator: 0x2f, omittingEmptySubsequences: false) {
            guard !segment.isEmpty else { throw bad("empty segment (//)") }
            guard segment.count <= 255 else { throw bad("segment longer than 255 bytes") }
            guard !(segment.elementsEqual([0x2e]) || segment.elementsEqual([0x2e, 0x2e])) else { throw bad("segment . or .. is not allowed") }
            for c in segment where !RefName.allowed(c) {
                throw bad("character \(String(decoding: [c], as: UTF8.self).debugQuoted) is not allowed (letters, digits, . _ - + @ :)")
            }
        }
        rawValue = text
    }

    static func allowed(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "@"), UInt8(ascii: ":"): true
        default: false
        }
    }

    public var description: String { rawValue }
    public static func < (a: RefName, b: RefName) -> Bool { a.rawValue < b.rawValue }

    /// Whether this name is `prefix` or lies under it (`apps/web` is under `apps`).
    public func isUnder(_ prefix: RefName) -> Bool {
        rawValue == prefix.rawValue || rawValue.hasPrefix(prefix.rawValue + "/")
    }

    /// `self` + "/" + `segment`.
    public func appending(_ segment: String) throws -> RefName {
        try RefName(rawValue + "/" + segment)
    }

    public init(from decoder: any Decoder) throws {
        self = try RefName(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}
