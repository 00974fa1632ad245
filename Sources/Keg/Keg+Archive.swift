public import KbuildCore
import Foundation

extension Keg {
    /// Stores the tar of a tree already in the Keg (`TreeArchive`) as a
    /// recipe and returns its KID and size; the tar is hashed from the Keg's
    /// files. (`putWithArchive` stores a directory and its archive at once, faster.)
    public func putArchive(of tree: KID) throws -> (kid: KID, size: UInt64) {
        let archive = try TreeArchive(tree: tree, keg: self)
        let kid = try archive.digest(keg: self)
        if freshen(kid) { return (kid, archive.size) }
        let writer = KegWriter(keg: self, loose: true)
        try BoundRecord.encoded(BoundRecord.treeArchive, object: kid, named: tree).withUnsafeBytes { raw in
            try writer.add(kid, kind: .treeArchive, bytes: raw, logicalSize: archive.size, compressor: nil)
        }
        try writer.commit()
        return (kid, archive.size)
    }

    /// The archive a stored tree-archive object makes, its size checked against the header.
    func archive(_ kid: KID, header: ObjectHeader, payload: [UInt8]) throws -> TreeArchive {
        let tree = try Keg.archivedTree(kid, payload: payload)
        let archive = try TreeArchive(tree: tree, keg: self)
        guard archive.size == header.logicalSize else {
            throw KbuildError(.corrupt, "failed to read archive \(kid): its tree \(tree) makes \(archive.size) bytes, the header says \(header.logicalSize)")
        }
        return archive
    }

    /// The tree a tree-archive object's payload names (its binding checked).
    static func archivedTree(_ kid: KID, payload: [UInt8]) throws -> KID {
        try BoundRecord.decoded(BoundRecord.treeArchive, payload, object: kid, what: "tree-archive record")
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
