import Foundation
import KbuildCore

/// A node's own network, for nodes that stand in for separate hosts on one
/// machine (`kbuild up --nodes 3`): a network namespace joined to the host by
/// a veth pair, the host end `10.A.I.1/24`, the node end `10.A.I.2/24`. The
/// router and health checks reach the node's processes at the node end.
/// Made with iproute2 (`ip`); kept across restarts of kbuild (its processes
/// live in it), removed by `kbuild down`.
public struct NodeNetwork: Sendable, Codable, Equatable {
    /// Under /run/netns.
    public var namespace: String
    public var hostInterface: String
    public var hostAddress: String
    public var nodeAddress: String

    /// The network of node `index` (1…) of the kbuild whose data dir is `dataDir`:
    /// names and the subnet are derived from both, so two data dirs do not clash.
    public static func plan(dataDir: String, index: Int) -> NodeNetwork {
        let tag = KID(hashing: Data(dataDir.utf8)).hex.prefix(4)
        let second = 100 + Int(tag.prefix(2), radix: 16)! % 100
        return NodeNetwork(namespace: "kb-\(tag)-n\(index)", hostInterface: "kb\(tag)n\(index)h",
                           hostAddress: "10.\(second).\(index).1", nodeAddress: "10.\(second).\(index).2")
    }

    var nodeInterface: String { String(hostInterface.dropLast()) + "p" }

    /// Makes the namespace and its link unless they exist (a restart finds them).
    public func ensure() throws {
        if FileManager.default.fileExists(atPath: "/run/netns/\(namespace)"), NodeNetwork.ip(["link", "show", hostInterface]) == 0 { return }
        remove()
        let steps: [[String]] = [
            ["netns", "add", namespace],
            ["link", "add", hostInterface, "type", "veth", "peer", "name", nodeInterface, "netns", namespace],
            ["addr", "add", "\(hostAddress)/24", "dev", hostInterface],
            ["link", "set", hostInterface, "up"],
            ["-n", namespace, "addr", "add", "\(nodeAddress)/24", "dev", nodeInterface],
            ["-n", namespace, "link", "set", nodeInterface, "up"],
            ["-n", namespace, "link", "set", "lo", "up"],
            ["-n", namespace, "route", "add", "default", "via", hostAddress],
        ]
        for step in steps where NodeNetwork.ip(step) != 0 {
            remove()
            throw KbuildError(.io, "failed to make the network of node namespace \(namespace): ip \(step.joined(separator: " ")) failed (is iproute2 installed, and are we root?)")
        }
    }

    /// Removes the link and the namespace (processes still in it keep it alive until they end).
    public func remove() {
        _ = NodeNetwork.ip(["link", "del", hostInterface])
        _ = NodeNetwork.ip(["netns", "del", namespace])
    }

    @discardableResult
    static func ip(_ args: [String]) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return 127 }
        p.waitUntilExit()
        return p.terminationStatus
    }
}
