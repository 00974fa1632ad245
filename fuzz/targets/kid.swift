// fuzz-modules: KbuildCore
// Object names in URLs and digests (/objects/K-…, sha256:… in the registry,
// prefixes typed by users) → KID(parsing:) and KIDPrefix(parsing:).
import Foundation
import KbuildCore

func isLowerHex(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = fuzzBytes(start, count)
    let text = String(decoding: bytes, as: UTF8.self)
    // "K-, sha256: or nothing, then 64 lowercase hex digits."
    let body = text.hasPrefix("K-") ? text.dropFirst(2) : text.hasPrefix("sha256:") ? text.dropFirst(7) : Substring(text)
    let full = body.utf8.count == 64 && body.utf8.allSatisfy(isLowerHex)
    let kid = try? KID(parsing: text)
    require((kid != nil) == full, "KID(parsing: \(text.debugQuoted)) is \(String(describing: kid))")
    if let kid {
        require(kid.hex == String(body), "\(text.debugQuoted) → \(kid)")
        require(try! KID(parsing: kid.description) == kid && (try! KID(parsing: kid.ociDigest)) == kid, "\(kid) round trip")
        require(KID(rawBytes: kid.rawBytes) == kid, "\(kid) raw bytes")
        let json = try! JSONEncoder().encode([kid])
        require((try? JSONDecoder().decode([KID].self, from: json)) == [kid], "\(kid) JSON")
    }
    // "8 to 64 lowercase hex digits", the same prefixes.
    let prefixOK = (8...64).contains(body.utf8.count) && body.utf8.allSatisfy(isLowerHex)
    let prefix = try? KIDPrefix(parsing: text)
    require((prefix != nil) == prefixOK, "KIDPrefix(parsing: \(text.debugQuoted)) is \(String(describing: prefix))")
    if let prefix {
        require(prefix.hex == String(body), "\(text.debugQuoted) → \(prefix)")
        require(prefix.complete == kid, "\(prefix).complete is \(String(describing: prefix.complete)), KID is \(String(describing: kid))")
    }
    // Any 32 bytes are a KID, and its hex reads back.
    if bytes.count >= 32, let raw = KID(rawBytes: bytes.prefix(32)) {
        require((try? KID(parsing: raw.hex)) == raw, "\(raw) from raw bytes")
        require(raw.rawBytes == Array(bytes.prefix(32)), "\(raw) raw bytes differ")
    }
    return 0
}
