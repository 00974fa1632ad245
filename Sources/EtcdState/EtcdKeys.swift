import KbuildCore
import KbuildState
import Foundation

/// Where kbuild keeps its state in etcd, under one root (`kbuild/` unless
/// told otherwise), readable with `etcdctl get --prefix kbuild/`:
///
///     kbuild/meta                  {"format":1,"cluster":"<uuid>"}: this etcd holds kbuild's state
///     kbuild/head                  written by every change: its mod_revision is the store's revision
///     kbuild/ref/<name>            a ref now: {"kid":…,"version":N}; its mod_revision is the ref's revision
///     kbuild/seq/<name>            {"seq":N,"version":V}: how many changes the name has had, its last version
///     kbuild/log/<name>#<seq>      one change, never rewritten: {"old","new","version","time","actor"};
///                                  its mod_revision is the change's revision. The permanent history:
///                                  etcd's compaction drops old values of keys, and these keys have one.
///     kbuild/record/<kid>          a record (canonical JSON), so losing a control plane's disk loses none
///     kbuild/leader/<role>         the holder of a role (the scheduler), under its lease
///     kbuild/members/<name>        a control plane that is up, under its lease: its URL
///
/// `#` cannot be in a ref name, so a name's own changes are exactly the
/// range [log/<name>#, log/<name>$) and its children's the range under
/// log/<name>/. A watch takes the one range [log/<name>#, log/<name>0),
/// which also holds siblings such as `<name>-x` and `<name>.x`: the reader
/// drops them.
public struct EtcdKeys: Sendable {
    public let root: String

    public init(root: String = "kbuild/") { self.root = root.hasSuffix("/") ? root : root + "/" }

    var meta: Data { key("meta") }
    var head: Data { key("head") }
    func ref(_ name: RefName) -> Data { key("ref/" + name.rawValue) }
    func seq(_ name: RefName) -> Data { key("seq/" + name.rawValue) }
    func log(_ name: RefName, seq: Int64) -> Data { key("log/" + name.rawValue + "#" + EtcdKeys.hex(seq)) }
    func record(_ kid: KID) -> Data { key("record/" + kid.description) }
    func leader(_ role: String) -> Data { key("leader/" + role) }
    func member(_ name: String) -> Data { key("members/" + name) }
    var members: (Data, Data) { prefixRange("members/") }

    /// One ref's changes.
    func logOf(_ name: RefName) -> (Data, Data) { (key("log/" + name.rawValue + "#"), key("log/" + name.rawValue + "$")) }

    /// The ranges holding the changes of `prefix` and everything under it (one range for the whole store).
    func logRanges(_ prefix: RefName?) -> [(Data, Data)] {
        guard let prefix else { return [prefixRange("log/")] }
        return [logOf(prefix), prefixRange("log/" + prefix.rawValue + "/")]
    }

    /// The ranges holding the refs at or under `prefix`.
    func refRanges(_ prefix: RefName?) -> [(Data, Data)] {
        guard let prefix else { return [prefixRange("ref/")] }
        let exact = key("ref/" + prefix.rawValue)
        return [(exact, exact + [0]), prefixRange("ref/" + prefix.rawValue + "/")]
    }

    /// One range covering every change at or under `prefix`, for a watch (siblings such as `apps/web-x` are filtered out by the reader).
    func watchRange(_ prefix: RefName?) -> (Data, Data) {
        guard let prefix else { return prefixRange("log/") }
        return (key("log/" + prefix.rawValue + "#"), key("log/" + prefix.rawValue + "0"))
    }

    /// The ref name and sequence number of a log key, nil for anything else.
    func parseLog(_ key: Data) -> (RefName, Int64)? {
        let logRoot = Data((root + "log/").utf8)
        guard key.starts(with: logRoot), let hash = key.lastIndex(of: UInt8(ascii: "#")) else { return nil }
        guard let name = try? RefName(String(decoding: key[key.index(key.startIndex, offsetBy: logRoot.count)..<hash], as: UTF8.self)),
              let seq = Int64(String(decoding: key[(hash + 1)...], as: UTF8.self), radix: 16) else { return nil }
        return (name, seq)
    }

    /// The ref name of a ref key, nil for anything else.
    func parseRef(_ key: Data) -> RefName? {
        let refRoot = Data((root + "ref/").utf8)
        guard key.starts(with: refRoot) else { return nil }
        return try? RefName(String(decoding: key.dropFirst(refRoot.count), as: UTF8.self))
    }

    func key(_ tail: String) -> Data { Data((root + tail).utf8) }

    /// [p, p with its last byte plus one): every key starting with p.
    func prefixRange(_ tail: String) -> (Data, Data) {
        let start = key(tail)
        var end = start
        end[end.index(before: end.endIndex)] += 1
        return (start, end)
    }

    static func hex(_ n: Int64) -> String {
        let s = String(n, radix: 16)
        return String(repeating: "0", count: max(0, 16 - s.count)) + s
    }
}
