public import KbuildCore
public import Keg
public import OCI
public import KbuildState
import Foundation

/// A stack: a base root filesystem that builds and apps run on, stored as an
/// OCI image and named by the ref `stacks/NAME`. Its KID (the image's) is
/// recorded in everything built on it.
public struct Stack: Sendable, Equatable {
    public var name: String
    public var image: KID
    public var manifest: Manifest
    /// The Keg trees of its layers, bottom first.
    public var layers: [KID]
    /// The layers' bytes (a descriptor's size is never trusted to add up: clamped, not trapped).
    public var size: Int64 {
        manifest.layers.reduce(0) { sum, layer in
            let (total, overflow) = sum.addingReportingOverflow(max(0, layer.size))
            return overflow ? .max : total
        }
    }

    public init(name: String, image: KID, manifest: Manifest, layers: [KID]) {
        self.name = name
        self.image = image
        self.manifest = manifest
        self.layers = layers
    }
}

/// Names stacks, makes them and checks them out as sandbox lower dirs.
public struct StackStore: Sendable {
    public let keg: Keg
    public let refs: any RefStore
    public let images: ImageStore

    public init(keg: Keg, refs: any RefStore) {
        self.keg = keg
        self.refs = refs
        self.images = ImageStore(keg: keg)
    }

    /// Stack names: 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit.
    public static func checkName(_ name: String) throws {
        guard Names.isStoreName(name) else {
            throw KbuildError(.invalidArgument, "invalid stack name \(name.debugDescription): use 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
        }
    }

    static func refName(_ name: String) throws -> RefName {
        try checkName(name)
        return try Schema.stack(name)
    }

    public func list() async throws -> [Stack] {
        var out: [Stack] = []
        for ref in try await refs.list(prefix: Schema.stacks) {
            guard case .stack(let name) = Schema.Key(ref.name) else { continue }
            out.append(try stack(name: name, image: ref.kid))
        }
        return out
    }

    public func get(_ name: String) async throws -> Stack {
        guard let ref = try await refs.get(try StackStore.refName(name)) else {
            throw KbuildError(.notFound, "no stack named \(name.debugDescription): see `kbuild stack ls`, or make one with `kbuild stack create busybox|debian` or `kbuild stack import DIR \(name)`")
        }
        return try stack(name: name, image: ref.kid)
    }

    /// The concrete stack a name means when an app is made or moved: `debian`
    /// is the newest `debian-N` there is (else a stack named `debian` itself);
    /// any other name is itself. The app records the result, so a newer Debian
    /// never moves an existing app.
    public func resolve(_ name: String) async throws -> Stack {
        guard !name.hasSuffix(StackStore.buildSuffix) else {
            throw KbuildError(.invalidArgument, "\(name) is the build image of the stack \(name.dropLast(StackStore.buildSuffix.count)); apps name the stack itself")
        }
        return try await find(name)
    }

    /// A stack by name, `debian` meaning the newest `debian-N` (build images included: `sandbox run` takes them).
    public func find(_ name: String) async throws -> Stack {
        if name == StackStore.debianAlias {
            let newest = try await list().compactMap { stack -> (Int, Stack)? in
                guard stack.name.hasPrefix("debian-"), let n = Int(stack.name.dropFirst("debian-".count)) else { return nil }
                return (n, stack)
            }.max { $0.0 < $1.0 }
            if let newest { return newest.1 }
        }
        return try await get(name)
    }

    /// The alias of the newest Debian stack.
    public static let debianAlias = "debian"
    /// A stack's build image is the stack `NAME-build`: the run image plus compilers and headers.
    public static let buildSuffix = "-build"

    /// The image builds of `stack` run on: its build image when it has one, else the stack itself.
    public func buildImage(of stack: String) async throws -> Stack {
        if stack.count + StackStore.buildSuffix.count <= 64, let ref = try await refs.get(try StackStore.refName(stack + StackStore.buildSuffix)) {
            return try self.stack(name: stack + StackStore.buildSuffix, image: ref.kid)
        }
        return try await get(stack)
    }

    private func stack(name: String, image: KID) throws -> Stack {
        let manifest = try images.manifest(image)
        return Stack(name: name, image: image, manifest: manifest, layers: try images.layerTrees(manifest))
    }

    public func remove(_ name: String, actor: String) async throws {
        let ref = try StackStore.refName(name)
        guard try await refs.get(ref) != nil else { throw KbuildError(.notFound, "no stack named \(name.debugDescription)") }
        _ = try await refs.compareAndSwap(ref, to: nil, expecting: .any, actor: actor)
    }

    /// Stores the root filesystem at `directory` as the one-layer stack `name`.
    /// Device nodes, fifos and sockets are left out (the sandbox brings its own /dev);
    /// owners are not kept (everything is root's).
    public func importDirectory(_ directory: String, name: String, actor: String, createdBy: String? = nil,
                                environment: [String] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]) async throws -> Stack {
        let ref = try StackStore.refName(name)
        var st = stat()
        guard stat(directory, &st) == 0 else {
            throw KbuildError(.notFound, "failed to import stack \(name): \(directory) does not exist")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            throw KbuildError(.invalidArgument, "failed to import stack \(name): \(directory) is not a directory")
        }
        let layer = try images.putLayer(directory: directory).layer
        let image = try images.putImage(
            layers: [layer],
            config: ImageConfig.Config(Env: environment, Cmd: ["/bin/sh"], WorkingDir: "/", Labels: ["dev.kbuild.stack": name]),
            createdBy: createdBy ?? "kbuild stack import \(name)",
            annotations: ["org.opencontainers.image.ref.name": name])
        _ = try await refs.compareAndSwap(ref, to: image, expecting: .any, actor: actor)
        return try stack(name: name, image: image)
    }

    /// The stack's layers checked out as read-only lower dirs, topmost first.
    /// Checkouts are shared by every sandbox on the stack and made once, under
    /// `<data-dir>/trees/<hex>` (built beside, renamed into place).
    public func lowerDirs(for stack: Stack) throws -> [String] {
        try stack.layers.reversed().map { try checkout($0) }
    }

    public func checkout(_ tree: KID) throws -> String {
        let dir = keg.dataDir.trees.path
        if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw KbuildError.syscall("mkdir", dir, verb: "check out \(tree)") }
        let path = dir + "/" + tree.hex
        var st = stat()
        if stat(path, &st) == 0 { return path }
        let tmp = dir + "/.tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try keg.checkout(tree, to: tmp)
            if rename(tmp, path) != 0 {
                let e = errno
                guard e == EEXIST || e == ENOTEMPTY else { throw KbuildError.syscall("rename", path, errno: e, verb: "check out \(tree)") }
                try? FileManager.default.removeItem(atPath: tmp)  // another process made it first
            }
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw error
        }
        return path
    }
}
