import KbuildCore
import Foundation
public import KbuildState

/// The parts of app.json kbuild reads: `healthchecks`, in the form Dokku
/// uses: `{"healthchecks": {"web": [{"type": "startup", "path": "/health",
/// "timeout": 5, "attempts": 10, "initialDelay": 2}]}}`. The first check of
/// each process type is used; other keys of app.json are left alone.
public enum AppJSON {
    /// app.json as kbuild reads it (JSONDecoder; unknown keys are ignored).
    struct Document: Decodable {
        var healthchecks: [String: [Check]]?
    }

    struct Check: Decodable {
        var type: String?
        var path: String?
        var timeout: Double?
        var attempts: Double?
        var initialDelay: Double?
    }

    public static func healthchecks(_ bytes: [UInt8]) throws -> [String: HealthCheck] {
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: Data(bytes))
        } catch let DecodingError.dataCorrupted(context) where context.codingPath.isEmpty {
            throw KbuildError(.invalidArgument, "failed to read app.json: not JSON (\((context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String ?? context.debugDescription))")
        } catch let error as DecodingError {
            throw KbuildError(.invalidArgument, "failed to read app.json: \(describe(error))")
        }
        var out: [String: HealthCheck] = [:]
        for (type, list) in document.healthchecks ?? [:] {
            guard let c = list.first else { continue }
            var check = HealthCheck()
            if let p = c.path {
                guard p.hasPrefix("/"), p.utf8.count <= 1024, !p.contains(where: { $0.isWhitespace || $0.isNewline }) else {
                    throw KbuildError(.invalidArgument, "failed to read app.json: healthchecks.\(type)[0].path must be a path starting with /")
                }
                check.path = p
            }
            check.timeout = try number(c.timeout, "timeout", type, default: check.timeout, range: 0.1...300)
            check.initialDelay = try number(c.initialDelay, "initialDelay", type, default: check.initialDelay, range: 0...600)
            check.attempts = Int(try number(c.attempts, "attempts", type, default: Double(check.attempts), range: 1...1000))
            out[type] = check
        }
        return out
    }

    /// A decoding error as the path in the document and what was wrong there.
    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingPrefix(".").description
        }
        switch error {
        case .typeMismatch(let type, let c): return "\(path(c.codingPath).isEmpty ? "the top level" : path(c.codingPath)) must be \(expected(type))"
        case .valueNotFound(let type, let c): return "\(path(c.codingPath)) must be \(expected(type))"
        case .keyNotFound(let key, let c): return "\(path(c.codingPath + [key])) is missing"
        case .dataCorrupted(let c): return "\(path(c.codingPath)): \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    static func expected(_ type: Any.Type) -> String {
        switch type {
        case is Double.Type: "a number"
        case is String.Type: "a string"
        case is [Any].Type: "a list (process type → list of checks)"
        default: "an object (healthchecks: process type → list of checks)"
        }
    }

    static func number(_ value: Double?, _ key: String, _ type: String, default fallback: Double, range: ClosedRange<Double>) throws -> Double {
        guard let value else { return fallback }
        guard range.contains(value) else {
            throw KbuildError(.invalidArgument, "failed to read app.json: healthchecks.\(type)[0].\(key) must be a number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }
}
