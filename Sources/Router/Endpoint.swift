/// One web process the router may send requests to.
///
/// `process` names the process for logs and traces (`python.web.1`, or a
/// process id); it takes part in equality, so the same address under a new
/// process name is a new endpoint and its pooled connections are not reused.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var process: String

    public init(host: String, port: Int, process: String) {
        self.host = host
        self.port = port
        self.process = process
    }

    public var description: String { "\(process)@\(host):\(port)" }
}
