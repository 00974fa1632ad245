/// Where an add-on is reached from the apps attached to it: a service
/// address of its own (198.18.0.0/15, never a process's) and its port. It
/// stays the same across restarts of the add-on; the node that runs it maps it
/// to wherever its process listens now.
public struct ServiceAddress: Codable, Sendable, Equatable, Hashable {
    public var address: String
    public var port: Int

    public init(address: String, port: Int) {
        self.address = address
        self.port = port
    }

    /// The range service addresses come from (RFC 2544's benchmarking range: no host has it).
    public static let range = "198.18.0.0/15"

    /// The `n`th address of the range (n < 131,072), skipping .0 and .255.
    public static func address(_ n: Int) -> String {
        let usable = n % (2 * 254 * 256)
        let third = usable / 254, fourth = usable % 254 + 1
        return "198.\(18 + third / 256).\(third % 256).\(fourth)"
    }
}
