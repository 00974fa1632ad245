public import Foundation
import Crypto

/// The name of every object in kbuild: `K-` and the 64 lowercase hex digits of
/// the SHA-256 of the object's bytes. For an OCI blob the same 32 bytes are its
/// `sha256:` digest, so the Keg doubles as a registry.
///
/// Held as four big-endian words: hashing and comparing a KID never allocates.
public struct KID: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public let w0, w1, w2, w3: UInt64

    /// The KID of `bytes` (SHA-256).
    public init(hashing bytes: UnsafeRawBufferPointer) {
        var hasher = SHA256()
        hasher.update(bufferPointer: bytes)
        self.init(digest: hasher.finalize())
    }

    public init(hashing data: some DataProtocol) {
        var hasher = SHA256()
        hasher.update(data: data)
        self.init(digest: hasher.finalize())
    }

    init(digest: SHA256.Digest) {
        self = digest.withUnsafeBytes { KID(rawBytes: $0)! }
    }

    /// The KID whose 32 raw bytes are `raw`, or nil when it is not 32 bytes long.
    public init?(rawBytes raw: UnsafeRawBufferPointer) {
        guard raw.count == 32 else { return nil }
        func word(_ i: Int) -> UInt64 {
            var v: UInt64 = 0
            for j in 0..<8 { v = v << 8 | UInt64(raw[i * 8 + j]) }
            return v
        }
        w0 = word(0); w1 = word(1); w2 = word(2); w3 = word(3)
    }

    public init?(rawBytes raw: some Collection<UInt8>) {
        let array = Array(raw)
        guard let kid = array.withUnsafeBytes({ KID(rawBytes: $0) }) else { return nil }
        self = kid
    }

    /// Parses a full KID: `K-<64 hex>`, `sha256:<64 hex>` or the bare 64 hex digits.
    public init(parsing text: some StringProtocol) throws {
        let hex = KID.stripPrefix(String(text))
        guard hex.utf8.count == 64, let bytes = KID.decodeHex(hex), let kid = KID(rawBytes: bytes) else {
            throw KbuildError(.invalidArgument, "failed to parse KID \(String(text).debugQuoted): want K- and 64 lowercase hex digits")
        }
        self = kid
    }

    /// The 32 raw bytes, big-endian.
    public var rawBytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        for (i, w) in [w0, w1, w2, w3].enumerated() {
            for j in 0..<8 { out[i * 8 + j] = UInt8(truncatingIfNeeded: w >> (56 - 8 * UInt64(j))) }
        }
        return out
    }

    public func appendRaw(to out: inout [UInt8]) {
        for w in [w0, w1, w2, w3] {
            for j in 0..<8 { out.append(UInt8(truncatingIfNeeded: w >> (56 - 8 * UInt64(j)))) }
        }
    }

    /// 64 lowercase hex digits.
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for w in [w0, w1, w2, w3] {
            for j in stride(from: 60, through: 0, by: -4) { out.append(digits[Int((w >> UInt64(j)) & 0xf)]) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public var description: String { "K-" + hex }
    /// The short form users read: `K-` and 8 hex digits (resolves like a git short sha).
    public var short: String { "K-" + hex.prefix(8) }
    /// The same number as an OCI digest.
    public var ociDigest: String { "sha256:" + hex }

    public static func < (a: KID, b: KID) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        self = try KID(parsing: text)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    static func stripPrefix(_ text: String) -> String {
        if text.hasPrefix("K-") { return String(text.dropFirst(2)) }
        if text.hasPrefix("sha256:") { return String(text.dropFirst(7)) }
        return text
    }

    static func decodeHex(_ hex: String) -> [UInt8]? {
        let u = Array(hex.utf8)
        guard u.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            default: return nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let hi = nibble(u[i]), let lo = nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}

/// What a user typed to name an object: a full KID or a unique prefix of at
/// least 8 hex digits (`K-0123abcd`, `0123abcd…`). The Keg resolves it.
public struct KIDPrefix: Sendable, Hashable, CustomStringConvertible {
    /// Lowercase hex digits, 8 to 64 of them.
    public let hex: String

    public static let minimumDigits = 8

    public init(parsing text: some StringProtocol) throws {
        let hex = KID.stripPrefix(String(text))
        let isHex = hex.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
        guard isHex, hex.utf8.count >= KIDPrefix.minimumDigits, hex.utf8.count <= 64 else {
            throw KbuildError(.invalidArgument, "failed to parse KID \(String(text).debugQuoted): want K- and 8 to 64 lowercase hex digits")
        }
        self.hex = hex
    }

    public var description: String { "K-" + hex }
    /// The full KID when all 64 digits were given.
    public var complete: KID? { hex.utf8.count == 64 ? try? KID(parsing: hex) : nil }
}

extension String {
    /// The string quoted with control characters escaped, for error messages.
    public var debugQuoted: String {
        var out = "\""
        for scalar in unicodeScalars.prefix(200) {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value):
                out += String(format: "\\x%02x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        if unicodeScalars.count > 200 { out += "…" }
        return out + "\""
    }

    /// The string safe to print on a terminal: C0 controls but tab, DEL and
    /// C1 controls (ESC and CSI start escape sequences that can rewrite the
    /// screen) shown as `\xNN`. For text others wrote: commit authors and
    /// messages, pushers, app output shown by kbuild itself.
    public var terminalSafe: String {
        guard unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || (0x7f...0x9f).contains($0.value) }) else { return self }
        var out = ""
        for scalar in unicodeScalars {
            if (scalar.value < 0x20 && scalar != "\t") || (0x7f...0x9f).contains(scalar.value) {
                out += String(format: "\\x%02x", scalar.value)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// A KID computed over bytes that arrive in pieces.
public struct IncrementalKID {
    private var hasher = SHA256()
    public init() {}
    public mutating func update(_ bytes: UnsafeRawBufferPointer) { hasher.update(bufferPointer: bytes) }
    public mutating func update(_ bytes: [UInt8]) { hasher.update(data: bytes) }
    public func finalize() -> KID { KID(digest: hasher.finalize()) }
}
