import KbuildCore
import Foundation
import Builds
import KbuildState

/// An app's config vars (`config:set`), one object per version. Injected into
/// each process's environment when it starts; never baked into an image.
public struct ConfigVars: Codable, Sendable, Equatable {
    public var kind = "kbuild.config/v1"
    public var vars: [String: String]

    public init(_ vars: [String: String] = [:]) { self.vars = vars }

    /// Names kbuild sets itself: a config var cannot take them over.
    public static func isReserved(_ name: String) -> Bool {
        name == "PORT" || name.hasPrefix("KBUILD_")
    }

    /// What `config:set` and `config:unset` would make, or an error naming the bad part.
    /// Values may hold anything but NUL (a C string cannot carry it).
    public func applying(set: [String: String], unset: [String]) throws -> ConfigVars {
        var next = vars
        for name in unset {
            try ConfigVars.checkName(name)
            guard next.removeValue(forKey: name) != nil else {
                throw KbuildError(.notFound, "failed to unset \(name): no config var by that name")
            }
        }
        for (name, value) in set {
            try ConfigVars.checkName(name)
            guard !value.utf8.contains(0) else {
                throw KbuildError(.invalidArgument, "failed to set \(name): the value contains a NUL byte")
            }
            guard value.utf8.count <= 32 << 10 else {
                throw KbuildError(.invalidArgument, "failed to set \(name): the value is \(value.utf8.count) bytes, more than 32 KiB")
            }
            next[name] = value
        }
        guard next.count <= 500 else {
            throw KbuildError(.invalidArgument, "failed to change config: \(next.count) vars, more than 500")
        }
        return ConfigVars(next)
    }

    static func checkName(_ name: String) throws {
        guard BuildFiles.isEnvironmentName(name) else {
            throw KbuildError(.invalidArgument, "invalid config var name \(name.debugQuoted): want letters, digits and '_', not starting with a digit")
        }
        guard !isReserved(name) else {
            throw KbuildError(.invalidArgument, "invalid config var name \(name): PORT and KBUILD_* are set by kbuild")
        }
    }

    /// `K=V` arguments as config:set takes them (the value may contain '=').
    public static func parseAssignments(_ args: [String]) throws -> [String: String] {
        var out: [String: String] = [:]
        for arg in args {
            guard let eq = arg.firstIndex(of: "="), eq != arg.startIndex else {
                throw KbuildError(.invalidArgument, "invalid config assignment \(arg.debugQuoted): want KEY=VALUE")
            }
            let name = String(arg[..<eq])
            try checkName(name)
            out[name] = String(arg[arg.index(after: eq)...])
        }
        return out
    }
}
