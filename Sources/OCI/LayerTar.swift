public import KbuildCore
public import Keg
import CArchive
import Foundation

/// A Keg tree as an OCI layer: an uncompressed tar that is the same bytes on
/// every machine. Entries in the tree's (sorted) order, parents first; every
/// mtime 1980-01-01T00:00:01Z (as Cloud Native Buildpacks use); owner 0:0 with
/// no names; the stored modes. The layer's KID is a function of the tree's.
public enum LayerTar {
    public static let mtime = 315_532_801
    public static let createdTimestamp = "1980-01-01T00:00:01Z"

    /// Streams the tree `tree` as a tar into the Keg (no temporary copy) and
    /// returns the tar's KID and size, committed.
    public static func store(tree: KID, keg: Keg) throws -> (kid: KID, size: UInt64) {
        let sink = TarSink(upload: KegUpload(keg: keg))
        let context = Unmanaged.passUnretained(sink).toOpaque()
        try withExtendedLifetime(sink) {
            try write(tree: tree, keg: keg, name: "layer of \(tree.short)") { archive in
                archive_write_open2(archive, context, nil, { _, context, buffer, length in
                    let sink = Unmanaged<TarSink>.fromOpaque(context!).takeUnretainedValue()
                    do {
                        try sink.upload.append(UnsafeRawBufferPointer(start: buffer, count: length))
                        return la_ssize_t(length)
                    } catch {
                        sink.error = error
                        return -1
                    }
                }, nil, nil)
            }
        }
        if let error = sink.error { throw error }
        let kid = try sink.upload.seal()
        try sink.upload.commit()
        return (kid, sink.upload.size)
    }

    private final class TarSink {
        let upload: KegUpload
        var error: (any Error)?
        init(upload: KegUpload) { self.upload = upload }
    }

    static func write(tree: KID, keg: Keg, name path: String, open: (OpaquePointer) -> Int32) throws {
        guard let archive = archive_write_new() else { throw KbuildError(.io, "failed to write layer \(path): out of memory") }
        defer { archive_write_free(archive) }
        func check(_ rc: Int32, _ what: String) throws {
            guard rc >= ARCHIVE_OK else {
                let reason = archive_error_string(archive).map { String(cString: $0) } ?? "error \(rc)"
                throw KbuildError(.io, "failed to write layer \(path): \(what): \(reason)")
            }
        }
        try check(archive_write_set_format_pax_restricted(archive), "set format")
        // Names are bytes: no translation through the process's locale (a C locale cannot hold UTF-8).
        try check(archive_write_set_format_option(archive, "pax", "hdrcharset", "BINARY"), "set header charset")
        try check(archive_write_set_bytes_in_last_block(archive, 1), "set block")
        try check(open(archive), "open")
        guard let entry = archive_entry_new() else { throw KbuildError(.io, "failed to write layer \(path): out of memory") }
        defer { archive_entry_free(entry) }

        func walk(_ kid: KID, prefix: [UInt8]) throws {
            for e in try keg.tree(kid).entries {
                var name = prefix + e.name
                archive_entry_clear(entry)
                archive_entry_set_mtime(entry, LayerTar.mtime, 0)
                archive_entry_set_uid(entry, 0)
                archive_entry_set_gid(entry, 0)
                switch e.type {
                case .directory:
                    name.append(UInt8(ascii: "/"))
                    archive_entry_set_filetype(entry, KB_AE_IFDIR)
                    archive_entry_set_perm(entry, mode_t(e.mode & 0o7777))
                case .symlink:
                    archive_entry_set_filetype(entry, KB_AE_IFLNK)
                    archive_entry_set_perm(entry, 0o777)
                    (e.target + [0]).withUnsafeBufferPointer { archive_entry_copy_symlink(entry, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self)) }
                case .file:
                    archive_entry_set_filetype(entry, KB_AE_IFREG)
                    archive_entry_set_perm(entry, mode_t(e.mode & 0o7777))
                    archive_entry_set_size(entry, la_int64_t(e.size))
                }
                (name + [0]).withUnsafeBufferPointer { archive_entry_copy_pathname(entry, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self)) }
                try check(archive_write_header(archive, entry), "header of \(String(decoding: name, as: UTF8.self))")
                switch e.type {
                case .file:
                    guard let file = e.kid else { continue }
                    try ObjectReader(keg: keg, kid: file).forEachPiece { piece in
                        let wrote = piece.withUnsafeBytes { archive_write_data(archive, $0.baseAddress, $0.count) }
                        guard wrote == piece.count else { try check(Int32(ARCHIVE_FATAL), "data of \(String(decoding: name, as: UTF8.self))"); return }
                    }
                case .directory:
                    if let sub = e.kid { try walk(sub, prefix: name) }
                case .symlink:
                    break
                }
            }
        }
        try walk(tree, prefix: [])
        try check(archive_write_close(archive), "close")
    }
}
