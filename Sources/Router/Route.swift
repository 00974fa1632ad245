/// The router's decision for one request's Host header.
public enum Route: Equatable, Sendable {
    /// Send the request to one of these endpoints (never empty).
    case app(String, [Endpoint])
    /// The app exists but has no healthy web process: answer 503.
    case noHealthyProcess(app: String)
    /// The app's web processes crashed (none is healthy): answer 503, saying so.
    case crashed(app: String)
    /// No app is served at this host: answer 404.
    case unknownApp(host: String)
    /// The Host header is missing or malformed: answer 400.
    case badHost(String)
}

/// App names as the rest of kbuild accepts them (`Names.isAppName`, a DNS
/// label): 1 to 63 of a-z, 0-9 and `-`, a letter first, no `-` last.
enum AppName {
    static func isValid<S: StringProtocol>(_ name: S) -> Bool {
        let utf8 = name.utf8
        guard let first = utf8.first, utf8.count <= 63, first >= UInt8(ascii: "a"), first <= UInt8(ascii: "z"),
              utf8[utf8.index(utf8.endIndex, offsetBy: -1)] != UInt8(ascii: "-") else {
            return false
        }
        for byte in utf8.dropFirst() {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"):
                continue
            default:
                return false
            }
        }
        return true
    }
}
