public import KbuildCore
import Builds
import KbuildState

/// What `kbuild trace X` was asked about, parsed once: a pure function of the text.
public enum TraceTarget: Sendable, Equatable {
    /// A host PID, as `ps` shows it on a node.
    case pid(Int32)
    /// A KID or a prefix of one: a process, release, image, build or source.
    case kid(KIDPrefix)
    /// An app: its current release and processes.
    case app(String)
    /// `APP.web.1`: one process of an app.
    case process(app: String, name: String)
    /// `APP@v7`.
    case release(app: String, version: Int64)
    /// `APP@v6..v7`: what changed.
    case releaseRange(app: String, from: Int64, to: Int64)
    /// A git commit sha (7 to 40 hex digits); failing that, a request id that looks like one.
    case commit(String)
    /// A request id the router gave (X-Request-Id).
    case request(String)

    public init(parsing text: String) throws {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let pid = Int32(t), pid > 0 {
            self = .pid(pid)
        } else if t.hasPrefix("K-") {
            self = .kid(try KIDPrefix(parsing: t))
        } else if let at = t.firstIndex(of: "@") {
            let app = String(t[..<at])
            let rest = String(t[t.index(after: at)...])
            guard Names.isAppName(app) else { throw KbuildError(.invalidArgument, "invalid app name \(app.debugQuoted) in \(t.debugQuoted)") }
            func version(_ s: Substring) throws -> Int64 {
                guard s.hasPrefix("v"), let v = Int64(s.dropFirst()), v > 0 else {
                    throw KbuildError(.invalidArgument, "invalid release \(String(s).debugQuoted) in \(t.debugQuoted): want vN, e.g. \(app)@v7 or \(app)@v6..v7")
                }
                return v
            }
            if let range = rest.range(of: "..") {
                self = .releaseRange(app: app, from: try version(rest[..<range.lowerBound]), to: try version(rest[range.upperBound...]))
            } else {
                self = .release(app: app, version: try version(Substring(rest)))
            }
        } else if (7...40).contains(t.count), t.allSatisfy(\.isHexDigit), t.contains(where: \.isNumber) {
            self = .commit(t.lowercased())
        } else if Names.isAppName(t) {
            self = .app(t)
        } else {
            let parts = t.split(separator: ".", maxSplits: 1).map(String.init)
            if parts.count == 2, Names.isAppName(parts[0]), let dot = parts[1].lastIndex(of: "."),
               BuildFiles.isProcessType(String(parts[1][..<dot])), Int(parts[1][parts[1].index(after: dot)...]) != nil {
                self = .process(app: parts[0], name: parts[1])
            } else if TraceTarget.isRequestID(t) {
                self = .request(t)
            } else {
                throw KbuildError(.invalidArgument, "cannot trace \(t.debugQuoted): give a PID, a KID (K-…), an app, APP.web.1, APP@v7, APP@v6..v7, a commit sha or a request id")
            }
        }
    }

    /// The ids the router keeps or makes: 8 to 128 of letters, digits, '.', '_', ':', '-'.
    static func isRequestID(_ s: String) -> Bool {
        (8...128).contains(s.utf8.count) && s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2e || c == 0x5f || c == 0x3a || c == 0x2d
        }
    }
}
