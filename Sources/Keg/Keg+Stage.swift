public import KbuildCore

extension Keg {
    /// Stages a tree whose encoding has been verified against `kid`.
    public func stage(_ kid: KID, tree: Tree, bytes: [UInt8], in writer: KegWriter) throws {
        guard tree.encoded() == bytes, KID(hashing: bytes) == kid else {
            throw KbuildError(.corrupt, "failed to store tree \(kid): not its canonical encoding")
        }
        try writer.add(kid, kind: .tree, bytes: bytes, compressor: Zstd.Context())
    }

    /// Stages a file's bytes as `put` would: a blob, or chunks and an index.
    public func stage(_ kid: KID, file bytes: [UInt8], in writer: KegWriter) throws {
        guard KID(hashing: bytes) == kid else {
            throw KbuildError(.corrupt, "failed to store file \(kid): the bytes do not hash to it")
        }
        let ingest = Ingest(keg: self, writer: writer, progress: nil)
        try bytes.withUnsafeBytes { raw in
            try ingest.store(raw, kid: kid, worker: ingest.pool.take())
        }
    }
}

extension Keg {
    /// Stages the file at `path` as `put` would, and checks that it is `kid`.
    public func stage(fileAt path: String, expecting kid: KID, in writer: KegWriter) throws {
        let ingest = Ingest(keg: self, writer: writer, progress: nil)
        let got = try ingest.file(BytePath(path), worker: ingest.pool.take())
        guard got == kid else {
            throw KbuildError(.corrupt, "failed to store file \(kid): the bytes received hash to \(got)")
        }
    }
}
