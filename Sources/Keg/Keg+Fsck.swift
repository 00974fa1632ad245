public import KbuildCore
import Foundation

/// What `fsck` found.
public struct FsckReport: Sendable {
    public struct Problem: Sendable, CustomStringConvertible {
        public enum Kind: String, Sendable { case corrupt, missing }
        public var kind: Kind
        public var kid: KID
        public var detail: String
        public var description: String { "\(kind.rawValue) \(kid): \(detail)" }
    }

    public var objectsChecked = 0
    public var bytesChecked: UInt64 = 0
    public var problems: [Problem] = []
    public var isClean: Bool { problems.isEmpty }
}

extension Keg {
    /// Reads every object and checks that it hashes to its name (a chunked file:
    /// that its chunks reassemble to its KID), and that every object a tree or
    /// index names is present. Reports each problem with the KID and the path.
    public func fsck(progress: KegProgress? = nil) throws -> FsckReport {
        var report = FsckReport()
        var present = Set<KID>()
        var wanted: [(KID, KID)] = [] // (child, parent)
        for kid in try allObjects() {
            present.insert(kid)
            do {
                let (header, payload) = try readStored(kid)
                report.objectsChecked += 1
                report.bytesChecked += UInt64(payload.count + ObjectHeader.size)
                progress?.add(files: 1, bytes: UInt64(payload.count))
                switch header.kind {
                case .blob:
                    _ = try decode(header: header, payload: payload, kid: kid)
                case .tree:
                    let tree = try Tree(decoding: try decode(header: header, payload: payload, kid: kid), kid: kid)
                    for e in tree.entries { if let child = e.kid { wanted.append((child, kid)) } }
                case .chunkIndex:
                    let node = try ChunkIndexNode(decoding: try decode(header: header, payload: payload, kid: kid), kid: kid)
                    for e in node.entries { wanted.append((e.kid, kid)) }
                case .treeArchive:
                    let tree = try Keg.archivedTree(kid, payload: payload)
                    wanted.append((tree, kid))
                    // A missing tree or file is reported below (as missing); anything else wrong is this archive's.
                    do {
                        let archive = try self.archive(kid, header: header, payload: payload)
                        if try archive.digest(keg: self) != kid {
                            report.problems.append(.init(kind: .corrupt, kid: kid, detail: "the tar of tree \(tree) does not hash to the archive's KID (\(storedPath(kid)))"))
                        }
                    } catch let error as KbuildError where error.code == .notFound {
                    }
                case .chunkedFile:
                    let root = try chunkedFileRoot(kid, payload: payload)
                    wanted.append((root, kid))
                    // Missing pieces are reported below; only hash what is whole.
                    if let chunks = try? chunks(ofChunkedFile: kid) {
                        var hasher = IncrementalKID()
                        for chunk in chunks {
                            guard let bytes = try? readVerified(chunk.kid) else { break }
                            hasher.update(bytes)
                        }
                        if hasher.finalize() != kid && chunks.allSatisfy({ contains($0.kid) }) {
                            report.problems.append(.init(kind: .corrupt, kid: kid, detail: "chunks do not reassemble to the file's KID (\(storedPath(kid)))"))
                        }
                    }
                }
            } catch {
                report.problems.append(.init(kind: .corrupt, kid: kid, detail: "\(KbuildError.wrap(error).message) (\(storedPath(kid)))"))
            }
        }
        // A pack index that does not load hides its objects: name it.
        for name in try Keg.listDirectory(packsPath) where name.hasSuffix(".idx") && !name.hasPrefix(Keg.stagingPrefix) {
            do {
                _ = try PackSet.loadIndex(dir: packsPath, name: String(name.dropLast(4)))
            } catch {
                report.problems.append(.init(kind: .corrupt, kid: KID(hashing: Array(name.utf8)), detail: "pack index \(packsPath)/\(name): \(KbuildError.wrap(error).message)"))
            }
        }
        var reported = Set<KID>()
        for (child, parent) in wanted where !present.contains(child) && reported.insert(child).inserted {
            report.problems.append(.init(kind: .missing, kid: child, detail: "named by \(parent) but not in the Keg"))
        }
        return report
    }

    /// Temporary files of writes in flight or killed: `keg/tmp/*`, `.tmp-*` in the fan-out dirs and in `keg/packs`.
    func stagingFiles() throws -> [String] {
        var out = try Keg.listDirectory(tmpPath).map { tmpPath + "/" + $0 }
        for byte in 0..<256 {
            let dir = objectsPath + "/" + Keg.hexByte(byte)
            for name in try Keg.listDirectory(dir) where name.hasPrefix(Keg.stagingPrefix) { out.append(dir + "/" + name) }
        }
        for name in try Keg.listDirectory(packsPath) where name.hasPrefix(Keg.stagingPrefix) { out.append(packsPath + "/" + name) }
        return out
    }

    /// Every stored object's KID, loose or packed, once each.
    public func allObjects() throws -> [KID] {
        var out = Set(try looseObjects())
        for pack in packs.all {
            for i in 0..<pack.count { out.insert(pack.kid(at: i)) }
        }
        return Array(out)
    }

    /// The KIDs of the loose object files.
    func looseObjects() throws -> [KID] {
        var out: [KID] = []
        for byte in 0..<256 {
            let fan = Keg.hexByte(byte)
            for name in try Keg.listDirectory(objectsPath + "/" + fan) {
                if let kid = try? KID(parsing: fan + name) { out.append(kid) }
            }
        }
        return out
    }
}
