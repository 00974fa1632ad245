import Yams
import KbuildCore

/// The small text formats an app and a buildpack hand to kbuild: `Procfile`,
/// `.buildpacks` and the YAML of `bin/release`. Pure functions, tested with tables.
public enum BuildFiles {
    /// `Procfile`: `type: command` lines, in order; blank lines and `#` comments skipped.
    /// Process types are 1 to 63 of a-z, A-Z, 0-9, `_`, `-`.
    public static func parseProcfile(_ text: String) throws -> [(type: String, command: String)] {
        var out: [(type: String, command: String)] = []
        for (number, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces.union(CharacterSet(charactersIn: "\r")))
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw KbuildError(.invalidArgument, "failed to read Procfile line \(number + 1) \(line.debugQuoted): want `type: command`")
            }
            let type = String(line[..<colon]).trimmingCharacters(in: .whitespaces)
            let command = String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
            guard isProcessType(type) else {
                throw KbuildError(.invalidArgument, "failed to read Procfile line \(number + 1): process type \(type.debugQuoted) must be 1 to 63 of letters, digits, '_' or '-'")
            }
            guard !command.isEmpty else {
                throw KbuildError(.invalidArgument, "failed to read Procfile line \(number + 1): process type \(type) has no command")
            }
            guard !out.contains(where: { $0.type == type }) else {
                throw KbuildError(.invalidArgument, "failed to read Procfile line \(number + 1): process type \(type) is defined twice")
            }
            out.append((type, command))
        }
        return out
    }

    public static func isProcessType(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 63 && s.utf8.allSatisfy {
            ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5f || $0 == 0x2d
        }
    }

    /// What `bin/release` printed: `config_vars` and `default_process_types`,
    /// each a map of `name: value` lines indented under its key. Other keys
    /// (`addons`) are ignored; values may be quoted.
    public struct Release: Sendable, Equatable {
        public var configVars: [String: String] = [:]
        public var processTypes: [String: String] = [:]
        public init(configVars: [String: String] = [:], processTypes: [String: String] = [:]) {
            self.configVars = configVars
            self.processTypes = processTypes
        }
    }

    public static func parseRelease(_ text: String) throws -> Release {
        func bad(_ why: String) -> KbuildError { KbuildError(.invalidArgument, "failed to read the output of bin/release: \(why)") }
        let document: Node?
        do {
            document = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw bad("not YAML (\(String(describing: error).split(separator: "\n").first ?? ""))")
        }
        var release = Release()
        // `---` alone, `--- {}` and `--- ~` say nothing.
        guard let document, !(document.scalar.map { ["", "~", "null"].contains($0.string) } ?? false) else { return release }
        guard let root = document.mapping else { throw bad("the top level must be a map (config_vars, default_process_types, addons)") }
        for (keyNode, value) in root {
            guard let key = keyNode.scalar?.string else { throw bad("a top-level key is not a string") }
            guard key == "config_vars" || key == "default_process_types" else { continue }  // addons and the like: Heroku's, not kbuild's
            if let scalar = value.scalar, ["", "~", "null"].contains(scalar.string) { continue }
            guard let map = value.mapping else { throw bad("\(key) must be a map of `name: value`") }
            for (nameNode, valueNode) in map {
                guard let name = nameNode.scalar?.string, let scalar = valueNode.scalar else {
                    throw bad("\(key) must be a map of `name: value`, with a plain value each")
                }
                guard !scalar.string.utf8.contains(0) else { throw bad("\(key).\(name) holds a NUL byte") }
                if key == "config_vars" {
                    guard isEnvironmentName(name) else { throw bad("\(name.debugQuoted) is not an environment variable name") }
                    release.configVars[name] = scalar.string
                } else {
                    guard isProcessType(name), !scalar.string.isEmpty else { throw bad("want `type: command` under default_process_types, not \(name.debugQuoted)") }
                    release.processTypes[name] = scalar.string
                }
            }
        }
        return release
    }

    /// `[A-Za-z_][A-Za-z0-9_]*`, the names a shell can use.
    public static func isEnvironmentName(_ s: String) -> Bool {
        guard let first = s.utf8.first, !(first >= 0x30 && first <= 0x39) else { return false }
        return s.utf8.count <= 255 && s.utf8.allSatisfy {
            ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5f
        }
    }

    /// `.buildpacks`: one buildpack per line, by name, as a `./path` in the
    /// app's tree, or as a git URL (`https://…[#BRANCH-OR-TAG]`); blank lines
    /// and `#` comments skipped.
    public enum BuildpackChoice: Sendable, Equatable {
        case named(String)
        case inTree(path: [String])
        case git(url: String, ref: String?)
    }

    public static func parseBuildpacksFile(_ text: String) throws -> [BuildpackChoice] {
        var out: [BuildpackChoice] = []
        for (number, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces.union(CharacterSet(charactersIn: "\r")))
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.contains("://") {
                out.append(try gitChoice(line, number: number + 1))
                continue
            }
            if line.hasPrefix("./") || line.hasPrefix("/") || line.contains("/") {
                let parts = line.split(separator: "/", omittingEmptySubsequences: true).map(String.init).filter { $0 != "." }
                guard line.hasPrefix("./"), !parts.isEmpty, !parts.contains(".."), !parts.contains(where: { $0.lowercased() == ".git" }) else {
                    throw KbuildError(.invalidArgument, "failed to read .buildpacks line \(number + 1) \(line.debugQuoted): a path must start with ./ and stay inside the app")
                }
                out.append(.inTree(path: parts))
            } else {
                guard Names.isStoreName(line) else {
                    throw KbuildError(.invalidArgument, "failed to read .buildpacks line \(number + 1): \(line.debugQuoted) is neither a buildpack name nor a ./path")
                }
                out.append(.named(line))
            }
        }
        guard !out.isEmpty else { throw KbuildError(.invalidArgument, "failed to read .buildpacks: it names no buildpack") }
        return out
    }

    /// A git URL line: https, http or git (a build cannot use a key or a local path).
    static func gitChoice(_ line: String, number: Int) throws -> BuildpackChoice {
        let parts = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let url = parts[0], ref = parts.count > 1 ? parts[1] : nil
        let scheme = url.prefix(while: { $0 != ":" }).lowercased()
        guard ["https", "http", "git"].contains(scheme) else {
            throw KbuildError(.invalidArgument, "failed to read .buildpacks line \(number): \(scheme):// is not a scheme a build may clone (want https://, http:// or git://)")
        }
        guard let parsed = URL(string: url), let host = parsed.host, !host.isEmpty, parsed.user == nil, parsed.password == nil,
              !url.contains(where: { $0.isWhitespace || $0.isASCII && $0.asciiValue! < 0x20 }), url.utf8.count <= 2048 else {
            throw KbuildError(.invalidArgument, "failed to read .buildpacks line \(number): \(url.debugQuoted) is not a URL of a git repository (want https://HOST/PATH[#REF], no credentials)")
        }
        if let ref {
            guard !ref.isEmpty, ref.utf8.count <= 255, !ref.hasPrefix("-"), !ref.contains(".."),
                  ref.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-/".contains($0)) }) else {
                throw KbuildError(.invalidArgument, "failed to read .buildpacks line \(number): \(ref.debugQuoted) is not a branch or tag name")
            }
        }
        return .git(url: url, ref: ref)
    }
}

import Foundation
import KbuildState
