import KbuildCore
import Foundation
import KbuildState

/// The runtime versions an app asks for (`.python-version`, `runtime.txt`,
/// `engines.node` in package.json, the `go` line of go.mod), checked against
/// what its stack has before anything is built: pure functions.
public enum RuntimeVersions {
    /// One request: which runtime, the version or range as written, and the file that says so.
    public struct Request: Sendable, Equatable {
        public var runtime: String
        public var wanted: String
        public var file: String
    }

    /// What the app's files ask for. `files` maps a top-level file name to its text.
    /// A package.json that is not JSON is refused here, naming the file.
    public static func requests(files: [String: String]) throws -> [Request] {
        var out: [Request] = []
        if let text = files[".python-version"], let line = firstLine(text) {
            out.append(Request(runtime: "python", wanted: line, file: ".python-version"))
        } else if let text = files["runtime.txt"], let line = firstLine(text) {
            guard line.hasPrefix("python-") else {
                throw KbuildError(.invalidArgument, "runtime.txt says \(line.debugQuoted): want python-X.Y (e.g. python-3.13)")
            }
            out.append(Request(runtime: "python", wanted: String(line.dropFirst("python-".count)), file: "runtime.txt"))
        }
        if let text = files["package.json"] {
            let object: Any
            do {
                object = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
            } catch {
                throw KbuildError(.invalidArgument, "package.json is not valid JSON: \((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)")")
            }
            guard let package = object as? [String: Any] else { throw KbuildError(.invalidArgument, "package.json must be a JSON object") }
            if let engines = package["engines"] as? [String: Any], let node = engines["node"] as? String,
               !node.trimmingCharacters(in: .whitespaces).isEmpty {
                out.append(Request(runtime: "node", wanted: node.trimmingCharacters(in: .whitespaces), file: "package.json engines.node"))
            }
        }
        if let text = files["go.mod"] {
            for raw in text.split(whereSeparator: \.isNewline) {
                let words = raw.split(separator: " ", omittingEmptySubsequences: true)
                if words.count >= 2, words[0] == "go" { out.append(Request(runtime: "go", wanted: String(words[1]), file: "go.mod")) }
            }
        }
        return out
    }

    static func firstLine(_ text: String) -> String? {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.first { !$0.isEmpty && !$0.hasPrefix("#") }
    }

    /// Whether `version` (as a stack has it, e.g. 3.13.5, 20.19.2, 1.24.4) satisfies a request.
    public static func satisfies(_ version: String, _ request: Request) throws -> Bool {
        switch request.runtime {
        case "python":
            // Matched on major.minor (3.13 and 3.13.1 both mean the stack's 3.13).
            let want = numbers(request.wanted), have = numbers(version)
            guard want.count >= 2 else {
                throw KbuildError(.invalidArgument, "\(request.file) asks for Python \(request.wanted.debugQuoted): want X.Y (e.g. 3.13)")
            }
            return Array(have.prefix(2)) == Array(want.prefix(2))
        case "go":
            // The go line is a minimum.
            let want = numbers(request.wanted)
            guard !want.isEmpty else { throw KbuildError(.invalidArgument, "go.mod says go \(request.wanted.debugQuoted): want a version (e.g. 1.22)") }
            return compare(numbers(version), want) >= 0
        default:
            return try semverRange(request.wanted, file: request.file).contains { set in set.allSatisfy { $0(numbers(version)) } }
        }
    }

    /// The numbers of a version (`v20.1.x` → [20, 1]).
    static func numbers(_ s: String) -> [Int] {
        var parts: [Int] = []
        for part in s.trimmingPrefix("v").split(separator: ".") {
            guard let n = Int(part.prefix { $0.isNumber }), part.first?.isNumber == true else { break }
            parts.append(n)
            if part.contains(where: { !$0.isNumber }) { break }
        }
        return parts
    }

    static func compare(_ a: [Int], _ b: [Int]) -> Int {
        for i in 0..<max(a.count, b.count) {
            let (x, y) = (i < a.count ? a[i] : 0, i < b.count ? b[i] : 0)
            if x != y { return x < y ? -1 : 1 }
        }
        return 0
    }

    /// An npm semver range (`||` of space-separated comparators: `>=18 <21`,
    /// `^20.1`, `~20.1`, `20.x`, `20`, `*`, `1.2 - 2`) as sets of tests.
    static func semverRange(_ range: String, file: String) throws -> [[([Int]) -> Bool]] {
        func bad() -> KbuildError { KbuildError(.invalidArgument, "\(file) asks for Node \(range.debugQuoted), which is not a version range kbuild reads (e.g. >=20, ^20.1, 20.x)") }
        var sets: [[([Int]) -> Bool]] = []
        for alternative in range.components(separatedBy: "||") {
            var words = alternative.split(separator: " ").map(String.init)
            var tests: [([Int]) -> Bool] = []
            // A hyphen range: a - b.
            if words.count == 3, words[1] == "-" {
                let (low, high) = (numbers(words[0]), numbers(words[2]))
                guard !low.isEmpty, !high.isEmpty else { throw bad() }
                tests = [{ compare($0, low) >= 0 }, { v in compare(Array(v.prefix(high.count)), high) <= 0 }]
                sets.append(tests)
                continue
            }
            // Operators written apart from their versions (`>= 18`).
            var joined: [String] = []
            while !words.isEmpty {
                let w = words.removeFirst()
                if ["<", "<=", ">", ">=", "=", "^", "~"].contains(w), !words.isEmpty { joined.append(w + words.removeFirst()) } else { joined.append(w) }
            }
            for word in joined {
                if ["*", "x", "X", ""].contains(word) { tests.append { _ in true }; continue }
                let op = String(word.prefix { "<>=^~".contains($0) })
                let version = String(word.dropFirst(op.count))
                let n = numbers(version)
                guard !n.isEmpty, version.first?.isNumber == true || version.first == "v" else { throw bad() }
                switch op {
                case ">=": tests.append { compare($0, n) >= 0 }
                case ">": tests.append { v in compare(Array(v.prefix(n.count)), n) > 0 }
                case "<=": tests.append { v in compare(Array(v.prefix(n.count)), n) <= 0 }
                case "<": tests.append { compare($0, n) < 0 }
                case "^":
                    // The first non-zero part stays.
                    let fixed = n.firstIndex { $0 != 0 }.map { $0 + 1 } ?? n.count
                    tests.append { v in compare(v, n) >= 0 && Array(v.prefix(fixed)) == Array(n.prefix(fixed)) }
                case "~":
                    let fixed = n.count >= 2 ? 2 : 1
                    tests.append { v in compare(v, n) >= 0 && Array(v.prefix(fixed)) == Array(n.prefix(fixed)) }
                case "", "=":
                    // 20, 20.1, 20.x: those parts match.
                    tests.append { v in Array(v.prefix(n.count)) == n }
                default: throw bad()
                }
            }
            sets.append(tests)
        }
        return sets
    }

    /// Refuses the build when the app's stack lacks a runtime version it asks for,
    /// naming what was asked, what the stack has, and which stack would have it.
    /// `stacks` maps each stack's name to its runtimes (python/node/go → version).
    public static func check(_ requests: [Request], app: String, stack: String, stacks: [String: [String: String]]) throws {
        let names = ["python": "Python", "node": "Node.js", "go": "Go"]
        for request in requests {
            let name = names[request.runtime] ?? request.runtime
            guard let have = stacks[stack]?[request.runtime] else {
                throw KbuildError(.unsatisfiable, "\(request.file) asks for \(name) \(request.wanted), and the stack \(stack) has no \(name)"
                                  + elsewhere(request, app: app, stacks: stacks, except: stack))
            }
            guard try satisfies(have, request) else {
                let available = stacks.keys.sorted().compactMap { s in stacks[s]?[request.runtime].map { "\(s): \($0)" } }.joined(separator: ", ")
                throw KbuildError(.unsatisfiable, "\(request.file) asks for \(name) \(request.wanted), but the stack \(stack) has \(name) \(have)"
                                  + elsewhere(request, app: app, stacks: stacks, except: stack) + " (stacks here: \(available))")
            }
        }
    }

    static func elsewhere(_ request: Request, app: String, stacks: [String: [String: String]], except: String) -> String {
        let fits = stacks.keys.sorted().filter { s in s != except && (stacks[s]?[request.runtime]).map { (try? satisfies($0, request)) == true } == true }
        if let first = fits.first { return "; the stack \(first) has \(stacks[first]![request.runtime]!): kbuild apps:set \(app) stack=\(first)" }
        return "; no stack here has it"
    }
}
