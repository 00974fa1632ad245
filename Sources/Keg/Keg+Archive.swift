public import KbuildCore
import Foundation

/// The payload of a tree archive: the tree, and a binding that ties it to the
/// archive's KID (as `ChunkedFileRecord` does for a chunked file).
struct TreeArchiveRecord: Equatable {
    static let size = 64
    var tree: KID

    static func binding(archive: KID, tree: KID) -> KID {
        var bytes = Array("kbuild-tree-archive-v1\0".utf8)
        archive.appendRaw(to: &bytes)
        tree.appendRaw(to: &bytes)
        return KID(hashing: bytes)
    }

    func encoded(archive: KID) -> [UInt8] {
        var out = [UInt8]()
        tree.appendRaw(to: &out)
        TreeArchiveRecord.binding(archive: archive, tree: tree).appendRaw(to: &out)
        return out
    }

    init(tree: KID) { self.tree = tree }

    init(decoding payload: [UInt8], archive: KID) throws {
        guard payload.count == TreeArchiveRecord.size,
              let tree = KID(rawBytes: payload[0..<32]),
              let binding = KID(rawBytes: payload[32..<64]),
              binding == TreeArchiveRecord.binding(archive: archive, tree: tree)
        else { throw KbuildError(.corrupt, "failed to read object \(archive): tree-archive record does not match its KID") }
        self.tree = tree
    }
}

extension Keg {
    /// Stores the tar of a tree already in the Keg (`TreeArchive`) as a
    /// recipe and returns its KID and size; the tar is hashed from the Keg's
    /// files. (`putWithArchive` stores a directory and its archive at once, faster.)
    public func putArchive(of tree: KID) throws -> (kid: KID, size: UInt64) {
        let archive = try TreeArchive(tree: tree, keg: self)
        let kid = try archive.digest(keg: self)
        if freshen(kid) { return (kid, archive.size) }
        let writer = KegWriter(keg: self, loose: true)
        try TreeArchiveRecord(tree: tree).encoded(archive: kid).withUnsafeBytes { raw in
            try writer.add(kid, kind: .treeArchive, bytes: raw, logicalSize: archive.size, compressor: nil)
        }
        try writer.commit()
        return (kid, archive.size)
    }

    /// The archive a stored tree-archive object makes, its size checked against the header.
    func archive(_ kid: KID, header: ObjectHeader, payload: [UInt8]) throws -> TreeArchive {
        let record = try TreeArchiveRecord(decoding: payload, archive: kid)
        let archive = try TreeArchive(tree: record.tree, keg: self)
        guard archive.size == header.logicalSize else {
            throw KbuildError(.corrupt, "failed to read archive \(kid): its tree \(record.tree) makes \(archive.size) bytes, the header says \(header.logicalSize)")
        }
        return archive
    }

    /// Writes a whole tree archive's bytes to `body` and checks they hash to its KID.
    func streamArchive(_ kid: KID, header: ObjectHeader, payload: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let archive = try archive(kid, header: header, payload: payload)
        var hasher = IncrementalKID()
        try archive.forEachPiece(keg: self) { piece in
            hasher.update(piece)
            try body(piece)
        }
        guard hasher.finalize() == kid else {
            throw KbuildError(.corrupt, "failed to read archive \(kid): the tar of \(archive.tree) does not hash to it")
        }
    }
}
