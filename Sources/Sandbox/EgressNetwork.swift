public import KbuildCore
import Foundation
import Synchronization

/// Network namespaces with NAT egress and nothing else: one per app process
/// (and per one-off run), so a tenant reaches the outside but never the
/// host, kbuild's ports, another app or a node network.
///
/// Each namespace gets a veth pair: `eth0` inside at `100.x.y.(4k+2)/30`,
/// the other end (`kp<tag><slot>k<k>`) in the *parent* namespace (the host,
/// or a node's own namespace for `kbuild up --nodes N`) at `…(4k+1)`, the
/// default route through it. One nftables table per kbuild and parent
/// namespace (`inet kbuild_<tag>`, see `ruleset`) does the rest:
///
///     input    from 100.64.0.0/10 or a kp* link: replies only (the host's
///              own addresses, loopback, kbuild's ports are unreachable)
///     forward  replies; never link to link; from 100.64.0.0/10 never to
///              100.64.0.0/10 (another process), a node network
///              (10.100.0.0–10.199.255.255) or link-local 169.254.0.0/16 (a
///              cloud's metadata service); to a kp* link: a published port
///              (DNAT, from outside a process only); IPv6: dropped
///     nat      masquerade 100.64.0.0/10 on the way out (the host only);
///              a node of its own publishes each process's port at its address
///     services an add-on's service address (198.18.0.0/15, `ServiceAddress`)
///              and port → where its process listens now (`services`, DNAT);
///              forwarded only from a process granted it (`grants`: the
///              process's address . the service address, for the apps
///              attached to the add-on); any other traffic to 198.18.0.0/15
///              is refused
///
/// DNS goes to the host's resolvers (its resolv.conf is mounted in), which
/// sit outside the host (here 10.255.255.53: only the node networks' part
/// of 10/8 is closed). The addresses come from 100.64.0.0/10 (RFC 6598):
/// each data dir takes a /18 of it (by a hash of its path), each slot (a
/// node, or one-off runs) 227 links of that.
///
/// Namespaces are made with iproute2 and the firewall with nft (Debian's
/// `iproute2` and `nftables`): the kernel's netlink interfaces have no
/// library in the mirror, and `ip -batch` and `nft -f` apply each change
/// in one call.
public struct EgressNetwork: Sendable {
    /// Four hex digits from the data dir: names and addresses of this kbuild.
    public let tag: String
    /// 0 the host's node, 1…16 the nodes of `--nodes N`, 17 one-off runs and builds.
    public let slot: Int
    /// The namespace the links' outer ends live in (nil: the host's).
    public let parent: String?
    /// A node of its own: its address, where each process's port is published.
    public let publishOn: String?
    let pool: Pool

    public static let range = "100.64.0.0/10"
    public static let linksPerSlot = 227
    public static let oneOffSlot = 17

    public init(dataDir: String, slot: Int, parent: String? = nil, publishOn: String? = nil) {
        tag = String(KID(hashing: Data(dataDir.utf8)).hex.prefix(4))
        self.slot = slot
        self.parent = parent
        self.publishOn = publishOn
        pool = Pool()
    }

    /// One process's network: its namespace, and its address inside.
    public struct Link: Sendable, Codable, Equatable {
        public var namespace: String
        public var outside: String
        public var inside: String
        public var interface: String
        public var index: Int

        /// The link's /30, as a route names it.
        public var subnet: String {
            var parts = inside.split(separator: ".").compactMap { Int($0) }
            parts[3] &= ~3
            return parts.map(String.init).joined(separator: ".") + "/30"
        }
    }

    /// A namespace held by this process for as long as it lives (a build's, a
    /// one-off run's): an `flock` on `/run/kbuild-netns/NAME.lock` says so, so
    /// several processes (kbuild up, `kbuild worker`, a push hook building
    /// inline) share the slot, and a sweep removes only what a dead process
    /// held: the kernel drops the lock with its holder, also on kill -9.
    public final class Held: Sendable {
        public let link: Link
        let lock: Int32
        init(link: Link, lock: Int32) {
            self.link = link
            self.lock = lock
        }
    }

    static let lockDir = "/run/kbuild-netns"
    static func lockPath(_ namespace: String) -> String { "\(lockDir)/\(namespace).lock" }

    /// Locks `namespace`'s file without waiting: the descriptor, or nil when a live process holds it.
    static func tryLock(_ namespace: String) throws -> Int32? {
        if mkdir(lockDir, 0o700) != 0 && errno != EEXIST { throw KbuildError.syscall("mkdir", lockDir, verb: "make a network") }
        let fd = open(lockPath(namespace), O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KbuildError.syscall("open", lockPath(namespace), verb: "make a network") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Makes a namespace held by this process (see `Held`): the first index no
    /// live process holds; one a dead process left is removed and made anew.
    public func makeHeld() async throws -> Held {
        try await offThread { try makeHeldNow() }
    }

    func makeHeldNow() throws -> Held {
        for index in 0..<EgressNetwork.linksPerSlot {
            let link = plan(index)
            guard let fd = try EgressNetwork.tryLock(link.namespace) else { continue }
            if FileManager.default.fileExists(atPath: "/run/netns/" + link.namespace) { removeNow(link, port: nil) }
            do {
                try makeNow(link, port: nil)
            } catch {
                close(fd)
                throw error
            }
            return Held(link: link, lock: fd)
        }
        throw KbuildError(.unsatisfiable, "failed to make a network: all \(EgressNetwork.linksPerSlot) of this slot's are in use")
    }

    /// Removes a held namespace, then lets go of it.
    public func remove(_ held: Held) async {
        try? await offThread {
            removeNow(held.link, port: nil)
            // The lock file stays: unlinking it would let one process lock the old file and another a new one.
            close(held.lock)
        }
    }

    /// Removes this slot's namespaces that no live process holds (what a killed build or run left).
    public func sweepUnheld() async -> Int {
        (try? await offThread { () -> Int in
            var removed = 0
            for link in existing() {
                guard let fd = try EgressNetwork.tryLock(link.namespace) else { continue }
                removeNow(link, port: nil)
                close(fd)
                removed += 1
            }
            return removed
        }) ?? 0
    }

    /// The namespaces in use, by index.
    final class Pool: Sendable {
        let used = Mutex<Set<Int>?>(nil)
    }

    /// The link with `index`: a pure function of the tag, slot and index.
    public func plan(_ index: Int) -> Link {
        let block = Int(tag, radix: 16)! % 256  // which /18 of 100.64.0.0/10
        let base = (100 << 24) | (64 << 16) | (block << 14)
        let start = base + (slot * EgressNetwork.linksPerSlot + index) * 4
        func dotted(_ a: Int) -> String { "\(a >> 24 & 255).\(a >> 16 & 255).\(a >> 8 & 255).\(a & 255)" }
        return Link(namespace: "kbp-\(tag)-\(slot)-\(index)", outside: dotted(start + 1), inside: dotted(start + 2),
                    interface: "kp\(tag)\(slot)k\(index)", index: index)
    }

    var prefix: String { "kbp-\(tag)-\(slot)-" }

    /// Makes a namespace for one process (a free index; its veth, addresses,
    /// route) and, on a node of its own, publishes `port` there.
    public func make(port: Int?) async throws -> Link {
        try await offThread { try makeNow(port: port) }
    }

    func makeNow(port: Int?) throws -> Link {
        let index = try pool.used.withLock { used -> Int in
            var set = used ?? Set(existing().map(\.index))
            guard let free = (0..<EgressNetwork.linksPerSlot).first(where: { !set.contains($0) }) else {
                throw KbuildError(.unsatisfiable, "failed to make a network for a process: all \(EgressNetwork.linksPerSlot) of this node's are in use")
            }
            set.insert(free)
            used = set
            return free
        }
        // When the namespace is there already (another kbuild's, or one being
        // removed), `ip netns add` fails: it is left alone, and its index taken.
        let link = plan(index)
        try makeNow(link, port: port)
        return link
    }

    /// Makes `link`'s namespace, veth, addresses and route (and publishes `port`).
    func makeNow(_ link: Link, port: Int?) throws {
        // A process that died while nothing watched it (a killed agent) may have left grants on this address:
        // they were its app's, not the next process's.
        revokeAllNow(link.inside)
        try EgressNetwork.ip(["netns", "add", link.namespace], what: "make network namespace \(link.namespace)")
        do {
            try EgressNetwork.ip(parent.map { ["-n", $0] } ?? [], batch: [
                "link add \(link.interface) type veth peer name eth0 netns \(link.namespace)",
                "addr add \(link.outside)/30 dev \(link.interface)",
                "link set \(link.interface) up",
            ], what: "link network namespace \(link.namespace)")
            try EgressNetwork.ip(["-n", link.namespace], batch: [
                "link set lo up",
                "addr add \(link.inside)/30 dev eth0",
                "link set eth0 up",
                "route add default via \(link.outside)",
            ], what: "set up network namespace \(link.namespace)")
            if let publishOn {
                // The host reaches (and answers) the process through its node: a route in the agent's own network
                // namespace, unless that is the node's (an agent on the machine the node is).
                if !EgressNetwork.inNamespace(parent) {
                    try EgressNetwork.ip([], batch: ["route replace \(link.subnet) via \(publishOn)"], what: "route to \(link.namespace)")
                }
                if let port { try nft("add element inet \(table) published { \(port) : \(link.inside) }\n", what: "publish port \(port)") }
            }
        } catch {
            removeNow(link, port: port)
            throw error
        }
    }

    /// Whether this process runs in the named network namespace (`/run/netns/NAME` is its own).
    static func inNamespace(_ name: String?) -> Bool {
        guard let name else { return false }
        var own = stat(), named = stat()
        guard stat("/proc/self/ns/net", &own) == 0, stat("/run/netns/" + name, &named) == 0 else { return false }
        return own.st_ino == named.st_ino && own.st_dev == named.st_dev
    }

    /// Removes a process's namespace (its veth goes with it) and what published its port.
    public func remove(_ link: Link, port: Int?) async {
        try? await offThread { removeNow(link, port: port) }
    }

    func removeNow(_ link: Link, port: Int?) {
        // Its add-ons close with it: the next process at this address is another's.
        revokeAllNow(link.inside)
        if publishOn != nil {
            if let port { try? nft("delete element inet \(table) published { \(port) }\n", what: "unpublish port \(port)") }
            if !EgressNetwork.inNamespace(parent) {
                try? EgressNetwork.ip([], batch: ["route del \(link.subnet) via \(publishOn!)"], what: "remove the route to \(link.namespace)")
            }
        }
        try? EgressNetwork.ip(parent.map { ["-n", $0] } ?? [], batch: ["link del \(link.interface)"], what: "remove \(link.interface)")
        try? EgressNetwork.ip(["netns", "del", link.namespace], what: "remove network namespace \(link.namespace)")
        pool.used.withLock { used in _ = used?.remove(link.index) }
    }

    /// This slot's namespaces that exist now.
    public func existing() -> [Link] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        return names.compactMap { name in
            guard name.hasPrefix(prefix), let index = Int(name.dropFirst(prefix.count)), (0..<EgressNetwork.linksPerSlot).contains(index) else { return nil }
            return plan(index)
        }
    }

    /// Removes this slot's namespaces but those in `keep` (what a killed kbuild left).
    public func sweep(keep: Set<String>) async -> Int {
        (try? await offThread { sweepNow(keep: keep) }) ?? 0
    }

    func sweepNow(keep: Set<String>) -> Int {
        var removed = 0
        for link in existing() where !keep.contains(link.namespace) {
            removeNow(link, port: nil)
            removed += 1
        }
        pool.used.withLock { $0 = nil }
        return removed
    }

    var table: String { "kbuild_\(tag)" }

    /// The firewall of the parent namespace (see the type's comment): a pure function.
    public static func ruleset(table: String, masquerade: Bool, publishOn: String?) -> String {
        var lines = ["table inet \(table) {"]
        if let publishOn {
            lines += [
                "  map published { type inet_service : ipv4_addr; }",
                "  chain prerouting { type nat hook prerouting priority dstnat; policy accept;",
                "    iifname != \"kp*\" ip saddr != \(range) ip daddr \(publishOn) dnat ip to tcp dport map @published",
                "  }",
                // What runs in the namespace itself (an agent whose machine it is: its health checks) reaches a
                // published port at the node's address too.
                "  chain output { type nat hook output priority -100; policy accept;",
                "    ip daddr \(publishOn) dnat ip to tcp dport map @published",
                "  }",
            ]
        }
        lines += [
            "  map services { type ipv4_addr . inet_service : ipv4_addr . inet_service; }",
            "  set grants { type ipv4_addr . ipv4_addr; }",
            "  chain service_dnat { type nat hook prerouting priority dstnat - 5; policy accept;",
            "    ip saddr \(range) ip daddr \(ServiceAddress.range) dnat ip to ip daddr . tcp dport map @services",
            "  }",
            "  chain input { type filter hook input priority filter - 5; policy accept;",
            "    ip saddr \(range) ct state established,related accept",
            "    ip saddr \(range) counter reject with icmpx type admin-prohibited",
            "    iifname \"kp*\" ct state established,related accept",
            "    iifname \"kp*\" counter reject with icmpx type admin-prohibited",
            "  }",
            "  chain forward { type filter hook forward priority filter - 5; policy accept;",
            "    ct state established,related accept",
            "    ct status dnat ip saddr . ct original ip daddr @grants accept",
            "    ip daddr \(ServiceAddress.range) counter reject with icmpx type admin-prohibited",
            "    iifname \"kp*\" oifname \"kp*\" counter reject with icmpx type admin-prohibited",
            "    ip saddr \(range) ip daddr { \(range), 10.100.0.0-10.199.255.255, 169.254.0.0/16 } counter reject with icmpx type admin-prohibited",
            // etcd's client and peer ports: the state of every tenant, for whoever reaches it.
            "    ip saddr \(range) tcp dport { 2379, 2380 } counter reject with icmpx type admin-prohibited",
            "    oifname \"kp*\" ct status dnat accept",
            "    oifname \"kp*\" counter drop",
            "    iifname \"kp*\" meta nfproto ipv6 counter drop",
            "  }",
        ]
        if masquerade {
            lines += [
                "  chain postrouting { type nat hook postrouting priority srcnat; policy accept;",
                "    ip saddr \(range) oifname != \"kp*\" masquerade",
                "  }",
            ]
        }
        return (lines + ["}"]).joined(separator: "\n") + "\n"
    }

    /// Installs (or replaces, in one transaction) this kbuild's table in the
    /// parent namespace, turns on forwarding there, and keeps what a port
    /// publication map held.
    public func installFirewall() async throws {
        try await offThread { try installFirewallNow() }
    }

    func installFirewallNow() throws {
        // What the table holds for processes that run on (ports, services, grants) is kept across the replace.
        var kept: [(String, [String])] = [("services", elements("map", "services")), ("grants", elements("set", "grants"))]
        if publishOn != nil { kept.append(("published", elements("map", "published"))) }
        // Declaring the table first makes the delete valid whether or not it existed: one atomic replace.
        var script = "table inet \(table)\ndelete table inet \(table)\n"
            + EgressNetwork.ruleset(table: table, masquerade: parent == nil, publishOn: publishOn)
        for (name, list) in kept where !list.isEmpty { script += "add element inet \(table) \(name) { \(list.joined(separator: ", ")) }\n" }
        try nft(script, what: "install the firewall of kbuild's process networks")
        try EgressNetwork.enableForwarding(in: parent)
    }

    /// An add-on's process answers at its service address: `service` → `link`'s address, `port`.
    public func serve(_ service: ServiceAddress, at link: Link, port: Int) async throws {
        try await offThread {
            // Replaced whole: a restarted add-on listens at another address and port.
            try? nft("delete element inet \(table) services { \(service.address) . \(service.port) }\n", what: "")
            try nft("add element inet \(table) services { \(service.address) . \(service.port) : \(link.inside) . \(port) }\n",
                    what: "map service \(service.address):\(service.port)")
        }
    }

    /// Takes the service address away from `link` (only if it still maps there).
    public func unserve(_ service: ServiceAddress, at link: Link, port: Int) async {
        _ = try? await offThread {
            let key = "\(service.address) . \(service.port)"
            guard let now = try? Tool.run(nftCommand(["get", "element", "inet", table, "services", "{ \(key) }"]), input: nil).output,
                  now.contains(": \(link.inside) . \(port)") else { return }
            try nft("delete element inet \(table) services { \(key) }\n", what: "unmap a service")
        }
    }

    /// Lets the process at `link` reach these services (its app's add-ons), until its link is removed.
    public func grant(_ link: Link, _ services: [ServiceAddress]) async throws {
        guard !services.isEmpty else { return }
        let list = Set(services.map(\.address)).sorted().map { "\(link.inside) . \($0)" }.joined(separator: ", ")
        try await offThread { try nft("add element inet \(table) grants { \(list) }\n", what: "open the add-ons of \(link.namespace)") }
    }

    /// The elements of this table's set or map `name` (`kind`: set or map), as nft prints them; none when there is none.
    func elements(_ kind: String, _ name: String) -> [String] {
        guard let out = try? Tool.run(nftCommand(["list", kind, "inet", table, name]), input: nil).output,
              let open = out.range(of: "elements = {"), let close = out.range(of: "}", range: open.upperBound..<out.endIndex) else { return [] }
        return out[open.upperBound..<close.lowerBound].split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    /// Every grant of `address`, and every service mapped to it (a process gone without its agent).
    func revokeAllNow(_ address: String) {
        let grants = elements("set", "grants").filter { $0.hasPrefix(address + " . ") }
        if !grants.isEmpty { try? nft("delete element inet \(table) grants { \(grants.joined(separator: ", ")) }\n", what: "close a gone process's add-ons") }
        // `SERVICE . PORT : ADDRESS . PORT`: deleted by key.
        let served = elements("map", "services").filter { $0.contains(": \(address) . ") }.compactMap { $0.split(separator: ":").first }
        if !served.isEmpty { try? nft("delete element inet \(table) services { \(served.joined(separator: ", ")) }\n", what: "unmap a gone process's service") }
    }


    /// Removes this kbuild's table (`kbuild down`, tests).
    public func removeFirewall() {
        try? nft("table inet \(table)\ndelete table inet \(table)\n", what: "remove the firewall")
    }

    func nftCommand(_ args: [String]) -> [String] {
        (parent.map { [EgressNetwork.ipPath, "netns", "exec", $0] } ?? []) + [EgressNetwork.nftPath] + args
    }

    func nft(_ script: String, what: String) throws {
        let r = try Tool.run(nftCommand(["-f", "-"]), input: script)
        guard r.status == 0 else { throw KbuildError(.io, "failed to \(what): nft: \(r.output.trimmingCharacters(in: .whitespacesAndNewlines))") }
    }

    /// IPv4 forwarding on in `namespace` (nil: the host). On the host, the
    /// value found first is kept in `/run/kbuild-ip-forward` for `kbuild down`.
    static func enableForwarding(in namespace: String?) throws {
        if let namespace {
            let r = try Tool.run([ipPath, "netns", "exec", namespace, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"], input: nil)
            guard r.status == 0 else { throw KbuildError(.io, "failed to turn on forwarding in \(namespace): \(r.output)") }
            return
        }
        let path = "/proc/sys/net/ipv4/ip_forward"
        let current = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        guard current != "1" else { return }
        try? Data((current + "\n").utf8).write(to: URL(fileURLWithPath: "/run/kbuild-ip-forward"))
        do {
            try Data("1\n".utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw KbuildError(.io, "failed to turn on IPv4 forwarding (\(path)), which app processes' egress needs: \(error)")
        }
    }

    /// Puts the host's IPv4 forwarding back as kbuild found it (`kbuild down`),
    /// unless another kbuild's firewall is still there.
    public static func restoreForwarding() {
        if let tables = try? Tool.run([nftPath, "list", "tables"], input: nil).output, tables.contains("inet kbuild_") { return }
        guard let before = try? String(contentsOfFile: "/run/kbuild-ip-forward", encoding: .utf8) else { return }
        try? Data(before.utf8).write(to: URL(fileURLWithPath: "/proc/sys/net/ipv4/ip_forward"))
        unlink("/run/kbuild-ip-forward")
    }

    /// The host's resolvers as a namespace behind NAT can use them: /etc/resolv.conf, unless
    /// it names only loopback resolvers (systemd-resolved's 127.0.0.53, which no other
    /// namespace reaches); then the upstream list systemd-resolved keeps. Nil: none.
    public static let resolvConf: String? = {
        let etc = "/etc/resolv.conf", upstream = "/run/systemd/resolve/resolv.conf"
        guard let text = try? String(contentsOfFile: etc, encoding: .utf8) else { return nil }
        let servers = text.split(whereSeparator: \.isNewline).compactMap { line -> String? in
            let words = line.split(whereSeparator: \.isWhitespace)
            return words.count >= 2 && words[0] == "nameserver" ? String(words[1]) : nil
        }
        if !servers.isEmpty, servers.allSatisfy({ $0.hasPrefix("127.") || $0 == "::1" }), FileManager.default.fileExists(atPath: upstream) {
            return upstream
        }
        return etc
    }()

    /// The read-only mounts a process behind NAT needs: the host's resolvers (and, with `certificates`, its CA bundle).
    public static func hostFiles(certificates: Bool = false) -> [SandboxMount] {
        var mounts = resolvConf.map { [SandboxMount(source: $0, target: "/etc/resolv.conf", readOnly: true)] } ?? []
        let bundle = "/etc/ssl/certs/ca-certificates.crt"
        if certificates, FileManager.default.fileExists(atPath: bundle) { mounts.append(SandboxMount(source: bundle, target: bundle, readOnly: true)) }
        return mounts
    }

    static let ipPath = FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip"
    static let nftPath = FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") ? "/usr/sbin/nft" : "/sbin/nft"

    static func ip(_ args: [String], batch: [String]? = nil, what: String) throws {
        let r = try Tool.run([ipPath] + args + (batch == nil ? [] : ["-batch", "-"]), input: batch.map { $0.joined(separator: "\n") + "\n" })
        guard r.status == 0 else {
            throw KbuildError(.io, "failed to \(what): ip \(args.joined(separator: " ")): \(r.output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
