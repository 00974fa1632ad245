/// A fast pseudo-random generator (wyrand) for request and trace ids; not for
/// secrets. Each event loop owns one, so drawing an id takes no lock and no
/// system call.
struct FastRandom {
    private var state: UInt64

    init() {
        var system = SystemRandomNumberGenerator()
        state = system.next()
    }

    mutating func next() -> UInt64 {
        state &+= 0xa076_1d64_78bd_642f
        let product = state.multipliedFullWidth(by: state ^ 0xe703_7ed1_a0b4_28db)
        return product.high ^ product.low
    }
}

/// `X-Request-Id`: the client's when it is a sane token, else 32 random hex digits.
enum RequestID {
    static func isValid(_ value: String) -> Bool {
        let utf8 = value.utf8
        guard !utf8.isEmpty, utf8.count <= 128 else { return false }
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: ":"), UInt8(ascii: "-"):
                continue
            default:
                return false
            }
        }
        return true
    }

    static func generate(using random: inout FastRandom) -> String {
        let high = random.next()
        let low = random.next()
        return String(unsafeUninitializedCapacity: 32) { buffer in
            Hex.write(high, into: buffer, at: 0)
            Hex.write(low, into: buffer, at: 16)
            return 32
        }
    }
}

/// W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/#traceparent-header).
enum TraceParent {
    /// Version 00 is exactly `00-<32 hex>-<16 hex>-<2 hex>`; later versions may
    /// append `-…`. Ids of all zeros and version `ff` are invalid.
    static func isValid(_ value: String) -> Bool {
        let bytes = Array(value.utf8)
        guard bytes.count >= 55, bytes[2] == UInt8(ascii: "-"), bytes[35] == UInt8(ascii: "-"),
            bytes[52] == UInt8(ascii: "-")
        else { return false }
        let version = bytes[0..<2]
        guard version.allSatisfy(Hex.isLowerHex), version != [UInt8(ascii: "f"), UInt8(ascii: "f")] else { return false }
        if version == [UInt8(ascii: "0"), UInt8(ascii: "0")] {
            guard bytes.count == 55 else { return false }
        } else if bytes.count > 55, bytes[55] != UInt8(ascii: "-") {
            return false
        }
        let traceID = bytes[3..<35]
        let parentID = bytes[36..<52]
        let flags = bytes[53..<55]
        return traceID.allSatisfy(Hex.isLowerHex) && parentID.allSatisfy(Hex.isLowerHex)
            && flags.allSatisfy(Hex.isLowerHex) && traceID.contains { $0 != UInt8(ascii: "0") }
            && parentID.contains { $0 != UInt8(ascii: "0") }
    }

    /// A new sampled trace: version 00, random trace and span ids, flags 01.
    static func generate(using random: inout FastRandom) -> String {
        let traceHigh = random.next() | 1 << 63  // never all zeros
        let traceLow = random.next()
        let span = random.next() | 1
        return String(unsafeUninitializedCapacity: 55) { buffer in
            buffer[0] = UInt8(ascii: "0")
            buffer[1] = UInt8(ascii: "0")
            buffer[2] = UInt8(ascii: "-")
            Hex.write(traceHigh, into: buffer, at: 3)
            Hex.write(traceLow, into: buffer, at: 19)
            buffer[35] = UInt8(ascii: "-")
            Hex.write(span, into: buffer, at: 36)
            buffer[52] = UInt8(ascii: "-")
            buffer[53] = UInt8(ascii: "0")
            buffer[54] = UInt8(ascii: "1")
            return 55
        }
    }
}

enum Hex {
    private static let digits: StaticString = "0123456789abcdef"

    static func write(_ value: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
        digits.withUTF8Buffer { digits in
            for index in 0..<16 {
                let nibble = Int((value >> UInt64(60 - 4 * index)) & 0xf)
                buffer[offset + index] = digits[nibble]
            }
        }
    }

    static func isLowerHex(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"))
    }
}
