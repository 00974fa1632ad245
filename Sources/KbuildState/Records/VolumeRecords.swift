import KbuildCore
public import Foundation

/// A persistent volume (`volumes:create`), at `volumes/APP/NAME`: a directory
/// of a fixed size on one node, which outlives every process, release and
/// restart. It lives on `node` for good: the processes that mount it are
/// placed there only, and never started elsewhere without it.
public struct VolumeRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Wanted on its node (the node's report says whether it is ready).
        case active
        /// `volumes:destroy`: its node deletes it, then the record goes.
        case destroying
    }
    public var kind = "kbuild.volume/v1"
    /// Unique for ever (`APP-NAME-<8 hex>`): the file name on its node, so a
    /// volume made again under the same name never finds the old one's data.
    public var id: String
    public var app: String
    public var name: String
    public var node: String
    /// Bytes; writes past this fail with ENOSPC.
    public var size: UInt64
    public var state: State
    /// When its node first said it was made (nil: not yet). From then on a
    /// node that cannot find its disk reports it failed: it never makes an
    /// empty one in its place.
    public var madeAt: Date?
    public var createdBy: String
    public var createdAt: Date

    public init(id: String, app: String, name: String, node: String, size: UInt64, state: State = .active, createdBy: String, createdAt: Date = Date()) {
        self.id = id
        self.app = app
        self.name = name
        self.node = node
        self.size = size
        self.state = state
        self.createdBy = createdBy
        self.createdAt = createdAt
    }

    /// The smallest volume: ext4 needs room for its own metadata.
    public static let minimumSize: UInt64 = 16 << 20
    /// The largest: ext4's own limit is far above, a typo is not.
    public static let maximumSize: UInt64 = 64 << 40
    /// Volumes one app may have (each is a loop device and a mount on its node).
    public static let maximumPerApp = 20
    /// What an app may hold in volumes when the admin set no limit (`apps:limits --volumes`).
    public static let defaultAppLimit: UInt64 = 10 << 30

    /// A volume's name: as an app's (a-z, 0-9, '-', starting with a letter), at most 30 bytes.
    public static func check(name: String) throws {
        guard Names.isAppName(name), name.utf8.count <= 30 else {
            throw KbuildError(.invalidArgument, "invalid volume name \(name.debugQuoted): 1 to 30 of a-z, 0-9 and '-', starting with a letter")
        }
    }

    /// Where a volume may be mounted in a process: an absolute, plain path that
    /// is not the root, the app's own directory, or where the sandbox mounts
    /// its own file systems. Returns it without repeated or trailing slashes.
    public static func check(mountPath path: String) throws -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard path.hasPrefix("/") else {
            throw KbuildError(.invalidArgument, "invalid mount path \(path.debugQuoted): it must be absolute, such as /data")
        }
        guard !path.utf8.contains(0), path.utf8.count < 1024, !parts.contains(where: { $0 == ".." || $0 == "." }) else {
            throw KbuildError(.invalidArgument, "invalid mount path \(path.debugQuoted): no . or .. components, at most 1023 bytes")
        }
        let clean = "/" + parts.joined(separator: "/")
        guard clean != "/" else { throw KbuildError(.invalidArgument, "invalid mount path /: a volume cannot be the whole file system") }
        guard clean != "/app" else {
            throw KbuildError(.invalidArgument, "invalid mount path /app: it is the app's code; mount under it (/app/storage) or elsewhere (/data)")
        }
        for reserved in ["/proc", "/dev", "/sys", "/tmp"] where clean == reserved || clean.hasPrefix(reserved + "/") {
            throw KbuildError(.invalidArgument, "invalid mount path \(clean): \(reserved) is the sandbox's own")
        }
        return clean
    }
}

/// A volume mounted into an app's processes (`volumes:mount`): part of the
/// release, so mounting and unmounting each make one. A rollback keeps the
/// mounts the app has (as it keeps its formation): volumes hold data, and data
/// is never rolled back with a release.
public struct VolumeMount: Codable, Sendable, Equatable {
    /// The volume's name in its app, and its id and node (`VolumeRecord`).
    public var volume: String
    public var id: String
    public var node: String
    /// Where it appears inside the process.
    public var path: String
    /// The process types it is mounted into; nil: every type.
    public var types: [String]?

    public init(volume: String, id: String, node: String, path: String, types: [String]? = nil) {
        self.volume = volume
        self.id = id
        self.node = node
        self.path = path
        self.types = types.map { $0.sorted() }
    }

    public func applies(to type: String) -> Bool { types?.contains(type) ?? true }
}

/// A volume a node keeps (`Assignment.volumes`): made when missing, deleted
/// only when `remove` says so (never because it is no longer listed).
public struct AssignedVolume: Codable, Sendable, Equatable {
    public var id: String
    public var app: String
    public var name: String
    public var size: UInt64
    /// `volumes:destroy`: delete it once no process of this node uses it.
    public var remove: Bool?
    /// Make it if its disk is not there: only until its node first made it.
    public var make: Bool?

    public init(id: String, app: String, name: String, size: UInt64, remove: Bool = false, make: Bool = false) {
        self.id = id
        self.app = app
        self.name = name
        self.size = size
        self.remove = remove ? true : nil
        self.make = make && !remove ? true : nil
    }
}

/// A volume as its node reports it.
public struct VolumeStatus: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Made and mounted on the node: processes may use it.
        case ready
        /// It could not be made or mounted (`error` says why).
        case failed
        /// Deleted, as `remove` asked.
        case removed
    }
    public var id: String
    public var state: State
    public var size: UInt64
    /// Bytes in use (nil unless ready).
    public var used: UInt64?
    public var error: String?

    public init(id: String, state: State, size: UInt64, used: UInt64? = nil, error: String? = nil) {
        self.id = id
        self.state = state
        self.size = size
        self.used = used
        self.error = error
    }
}
