public import KbuildCore

/// A directory: entries sorted by the bytes of their names. There is exactly one
/// encoding of a given directory (the decoder refuses any other order), so the
/// same directory always has the same KID, whatever order it was read in.
///
///     "KTR1" u32 count, then per entry:
///       u8 type (1 file, 2 directory, 3 symlink)
///       u32 mode (permission bits, 0o7777)
///       u64 size (file bytes; 0 for a directory; target length for a symlink)
///       u16 name length, name bytes
///       file or directory: 32 bytes of KID; symlink: u16 length, target bytes
public struct Tree: Sendable, Equatable {
    public enum EntryType: UInt8, Sendable {
        case file = 1
        case directory = 2
        case symlink = 3
    }

    public struct Entry: Sendable, Equatable {
        public var name: [UInt8]
        public var type: EntryType
        public var mode: UInt32
        public var size: UInt64
        /// The content (file) or subtree (directory); nil for a symlink.
        public var kid: KID?
        /// The link target; empty unless a symlink.
        public var target: [UInt8]

        public static func file(_ name: String, kid: KID, size: UInt64, mode: UInt32 = 0o644) -> Entry {
            Entry(name: Array(name.utf8), type: .file, mode: mode & 0o7777, size: size, kid: kid, target: [])
        }

        public static func directory(_ name: String, kid: KID, mode: UInt32 = 0o755) -> Entry {
            Entry(name: Array(name.utf8), type: .directory, mode: mode & 0o7777, size: 0, kid: kid, target: [])
        }

        public static func symlink(_ name: String, target: String) -> Entry {
            Entry(name: Array(name.utf8), type: .symlink, mode: 0o777, size: UInt64(target.utf8.count), kid: nil, target: Array(target.utf8))
        }

        public var nameString: String { String(decoding: name, as: UTF8.self) }
        public var targetString: String { String(decoding: target, as: UTF8.self) }
    }

    public private(set) var entries: [Entry]

    /// Sorts the entries into canonical order; refuses names that cannot be a
    /// single path component, and duplicates.
    public init(entries: [Entry]) throws {
        let sorted = entries.sorted { $0.name.lexicographicallyPrecedes($1.name) }
        for (i, e) in sorted.enumerated() {
            try Tree.validate(name: e.name)
            if i > 0 && sorted[i - 1].name == e.name {
                throw KbuildError(.invalidArgument, "failed to make tree: duplicate name \(e.nameString.debugQuoted)")
            }
        }
        self.entries = sorted
    }

    static func validate(name: [UInt8]) throws {
        let bad = name.isEmpty || name == [0x2e] || name == [0x2e, 0x2e] || name.contains(0x2f) || name.contains(0) || name.count > 0xffff
        if bad {
            throw KbuildError(.corrupt, "failed to read tree entry \(String(decoding: name, as: UTF8.self).debugQuoted): not a single path component")
        }
    }

    public func encoded() -> [UInt8] {
        var out = Array("KTR1".utf8)
        out.appendLE(UInt32(entries.count))
        for e in entries {
            out.append(e.type.rawValue)
            out.appendLE(e.mode)
            out.appendLE(e.size)
            out.appendLE(UInt16(e.name.count))
            out.append(contentsOf: e.name)
            if e.type == .symlink {
                out.appendLE(UInt16(e.target.count))
                out.append(contentsOf: e.target)
            } else {
                e.kid!.appendRaw(to: &out)
            }
        }
        return out
    }

    public init(decoding bytes: [UInt8], kid: KID) throws {
        func corrupt(_ why: String) -> KbuildError { KbuildError(.corrupt, "failed to read tree \(kid): \(why)") }
        guard bytes.count >= 8, bytes[0..<4].elementsEqual("KTR1".utf8) else { throw corrupt("bad magic") }
        let count = Int(bytes.loadLE(at: 4, as: UInt32.self))
        var at = 8
        func need(_ n: Int) throws { if at + n > bytes.count { throw corrupt("truncated") } }
        var entries: [Entry] = []
        entries.reserveCapacity(min(count, bytes.count / 16))
        for _ in 0..<count {
            try need(15)
            guard let type = EntryType(rawValue: bytes[at]) else { throw corrupt("bad entry type \(bytes[at])") }
            let mode: UInt32 = bytes.loadLE(at: at + 1)
            let size: UInt64 = bytes.loadLE(at: at + 5)
            let nameLength = Int(bytes.loadLE(at: at + 13, as: UInt16.self))
            at += 15
            try need(nameLength)
            let name = Array(bytes[at..<at + nameLength])
            at += nameLength
            try Tree.validate(name: name)
            guard mode & ~0o7777 == 0 else { throw corrupt("bad mode \(String(mode, radix: 8))") }
            var kid: KID?
            var target: [UInt8] = []
            if type == .symlink {
                try need(2)
                let n = Int(bytes.loadLE(at: at, as: UInt16.self))
                at += 2
                try need(n)
                target = Array(bytes[at..<at + n])
                at += n
                if target.isEmpty || target.contains(0) { throw corrupt("bad symlink target") }
            } else {
                try need(32)
                kid = KID(rawBytes: bytes[at..<at + 32])
                at += 32
            }
            if let last = entries.last, !last.name.lexicographicallyPrecedes(name) {
                throw corrupt("entries out of order or duplicated at \(String(decoding: name, as: UTF8.self).debugQuoted)")
            }
            entries.append(Entry(name: name, type: type, mode: mode, size: size, kid: kid, target: target))
        }
        guard at == bytes.count else { throw corrupt("\(bytes.count - at) trailing bytes") }
        self.entries = entries
    }
}
