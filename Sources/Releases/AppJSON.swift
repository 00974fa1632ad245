import KbuildCore
import Foundation

/// The parts of app.json kbuild reads: `healthchecks`, in the form Dokku
/// uses: `{"healthchecks": {"web": [{"type": "startup", "path": "/health",
/// "timeout": 5, "attempts": 10, "initialDelay": 2}]}}`. The first check of
/// each process type is used; other keys of app.json are left alone.
public enum AppJSON {
    public static func healthchecks(_ bytes: [UInt8]) throws -> [String: HealthCheck] {
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: Data(bytes))
        } catch {
            throw KbuildError(.invalidArgument, "failed to read app.json: not JSON (\(error.localizedDescription))")
        }
        guard let object = root as? [String: Any] else {
            throw KbuildError(.invalidArgument, "failed to read app.json: the top level must be an object")
        }
        guard let checks = object["healthchecks"] else { return [:] }
        guard let byType = checks as? [String: Any] else {
            throw KbuildError(.invalidArgument, "failed to read app.json: healthchecks must be an object of process type → list of checks")
        }
        var out: [String: HealthCheck] = [:]
        for (type, value) in byType {
            guard let list = value as? [Any], let first = list.first else { continue }
            guard let c = first as? [String: Any] else {
                throw KbuildError(.invalidArgument, "failed to read app.json: healthchecks.\(type)[0] must be an object")
            }
            var check = HealthCheck()
            if let path = c["path"] {
                guard let p = path as? String, p.hasPrefix("/"), p.utf8.count <= 1024, !p.contains(where: { $0.isWhitespace || $0.isNewline }) else {
                    throw KbuildError(.invalidArgument, "failed to read app.json: healthchecks.\(type)[0].path must be a path starting with /")
                }
                check.path = p
            }
            check.timeout = try number(c, "timeout", type, default: check.timeout, range: 0.1...300)
            check.initialDelay = try number(c, "initialDelay", type, default: check.initialDelay, range: 0...600)
            check.attempts = Int(try number(c, "attempts", type, default: Double(check.attempts), range: 1...1000))
            out[type] = check
        }
        return out
    }

    static func number(_ c: [String: Any], _ key: String, _ type: String, default value: Double, range: ClosedRange<Double>) throws -> Double {
        guard let raw = c[key] else { return value }
        guard let n = raw as? NSNumber, !(raw is Bool), range.contains(n.doubleValue) else {
            throw KbuildError(.invalidArgument, "failed to read app.json: healthchecks.\(type)[0].\(key) must be a number from \(range.lowerBound) to \(range.upperBound)")
        }
        return n.doubleValue
    }
}
