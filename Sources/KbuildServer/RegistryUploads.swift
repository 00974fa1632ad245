import KbuildCore
import Keg
import Foundation

/// Blob uploads in progress (the push side of the distribution API). Bytes
/// are chunked, hashed and staged in the Keg as they arrive (`KegUpload`), so
/// that the digest is known when the last byte is, and nothing is visible
/// until it matches: a wrong digest or a truncated upload leaves no object.
///
/// An upload holds up to a block (8 MiB) in memory and a staged pack on disk,
/// so sessions are bounded: one idle for `idleTimeout` (two minutes: a client
/// that stalls longer between chunks starts again) is dropped with what it
/// staged, at each start and by `sweep` on a timer; at most `maxSessions` run
/// at once, and at most `maxPerRepository` in one repository, so abandoned
/// uploads to one repository cannot block pushes to the others.
actor RegistryUploads {
    struct Session {
        var repository: String
        var upload: KegUpload
        var lastUsed: ContinuousClock.Instant
    }

    let keg: Keg
    let idleTimeout: Duration
    let maxSessions: Int
    let maxPerRepository: Int
    private var sessions: [String: Session] = [:]

    init(keg: Keg, idleTimeout: Duration = .seconds(120), maxSessions: Int = 64, maxPerRepository: Int = 16) {
        self.keg = keg
        self.idleTimeout = idleTimeout
        self.maxSessions = maxSessions
        self.maxPerRepository = maxPerRepository
    }

    /// Drops sessions idle for over `idleTimeout`, and what they staged.
    func sweep() {
        let now = ContinuousClock.now
        for (id, s) in sessions where now - s.lastUsed > idleTimeout {
            s.upload.abort()
            sessions[id] = nil
        }
    }

    func start(repository: String) throws -> String {
        let now = ContinuousClock.now
        sweep()
        guard sessions.count < maxSessions else {
            throw RegistryError(.tooManyRequests, "TOOMANYREQUESTS", "\(sessions.count) uploads are in progress; finish or cancel one first")
        }
        guard sessions.values.filter({ $0.repository == repository }).count < maxPerRepository else {
            throw RegistryError(.tooManyRequests, "TOOMANYREQUESTS", "\(maxPerRepository) uploads to \(repository) are in progress; finish or cancel one first")
        }
        let id = UUID().uuidString.lowercased()
        sessions[id] = Session(repository: repository, upload: KegUpload(keg: keg), lastUsed: now)
        return id
    }

    func size(of id: String, repository: String) throws -> UInt64 {
        try session(id, repository).upload.size
    }

    /// Appends bytes; `at` (from Content-Range) must be where the upload stands.
    func append(_ id: String, repository: String, bytes: [UInt8], at offset: UInt64?) throws -> UInt64 {
        let s = try session(id, repository)
        if let offset, offset != s.upload.size {
            throw RegistryError(.rangeNotSatisfiable, "BLOB_UPLOAD_INVALID", "chunk starts at \(offset), the upload is at \(s.upload.size)")
        }
        try bytes.withUnsafeBytes { try s.upload.append($0) }
        return s.upload.size
    }

    /// Ends the upload: the bytes must hash to `digest`; then they are committed to the Keg.
    func finish(_ id: String, repository: String, digest: KID) throws -> KID {
        let s = try session(id, repository)
        sessions[id] = nil
        let got = try s.upload.seal()
        guard got == digest else {
            s.upload.abort()
            throw RegistryError(.badRequest, "DIGEST_INVALID", "upload of \(s.upload.size) bytes has digest \(got.ociDigest), not \(digest.ociDigest)")
        }
        try s.upload.commit()
        return got
    }

    func cancel(_ id: String, repository: String) throws {
        let s = try session(id, repository)
        sessions[id] = nil
        s.upload.abort()
    }

    private func session(_ id: String, _ repository: String) throws -> Session {
        guard var s = sessions[id], s.repository == repository else {
            throw RegistryError(.notFound, "BLOB_UPLOAD_UNKNOWN", "no upload \(id) in repository \(repository) (finished, cancelled, or idle for over \(idleTimeout))")
        }
        s.lastUsed = .now
        sessions[id] = s
        return s
    }
}
