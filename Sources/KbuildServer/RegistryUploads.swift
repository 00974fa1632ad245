import KbuildCore
import Keg
import Crypto
import Foundation

/// Blob uploads in progress (the push side of the distribution API). Bytes go
/// to a file under the Keg's tmp dir and through SHA-256 as they arrive, so
/// the digest is checked before anything is stored: a wrong digest or a
/// truncated upload leaves no object behind.
actor RegistryUploads {
    struct Session {
        var repository: String
        var path: String
        var fd: Int32
        var hasher = SHA256()
        var size: UInt64 = 0
    }

    let keg: Keg
    private var sessions: [String: Session] = [:]

    init(keg: Keg) {
        self.keg = keg
    }

    func start(repository: String) throws -> String {
        let id = UUID().uuidString.lowercased()
        let path = keg.dataDir.kegTmp.path + "/upload-\(id)"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KbuildError.syscall("open", path, verb: "start an upload") }
        sessions[id] = Session(repository: repository, path: path, fd: fd)
        return id
    }

    func size(of id: String, repository: String) throws -> UInt64 {
        try session(id, repository).size
    }

    /// Appends bytes; `at` (from Content-Range) must be where the upload stands.
    func append(_ id: String, repository: String, bytes: [UInt8], at offset: UInt64?) throws -> UInt64 {
        var s = try session(id, repository)
        if let offset, offset != s.size {
            throw RegistryError(.rangeNotSatisfiable, "BLOB_UPLOAD_INVALID", "chunk starts at \(offset), the upload is at \(s.size)")
        }
        var at = 0
        while at < bytes.count {
            let n = bytes[at...].withUnsafeBytes { write(s.fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw KbuildError.syscall("write", s.path, verb: "store an upload") }
            at += n
        }
        s.hasher.update(data: bytes)
        s.size += UInt64(bytes.count)
        sessions[id] = s
        return s.size
    }

    /// Ends the upload: the bytes must hash to `digest`; then they are stored in the Keg.
    func finish(_ id: String, repository: String, digest: KID) throws -> KID {
        let s = try session(id, repository)
        sessions[id] = nil
        close(s.fd)
        defer { unlink(s.path) }
        let got = s.hasher.finalize().withUnsafeBytes { KID(rawBytes: $0)! }
        guard got == digest else {
            throw RegistryError(.badRequest, "DIGEST_INVALID", "upload of \(s.size) bytes has digest \(got.ociDigest), not \(digest.ociDigest)")
        }
        let kid = try keg.put(path: s.path)
        guard kid == digest else { throw RegistryError(.internalServerError, "UNKNOWN", "stored \(kid), expected \(digest)") }
        return kid
    }

    func cancel(_ id: String, repository: String) throws {
        let s = try session(id, repository)
        sessions[id] = nil
        close(s.fd)
        unlink(s.path)
    }

    private func session(_ id: String, _ repository: String) throws -> Session {
        guard let s = sessions[id], s.repository == repository else {
            throw RegistryError(.notFound, "BLOB_UPLOAD_UNKNOWN", "no upload \(id) in repository \(repository)")
        }
        return s
    }
}
