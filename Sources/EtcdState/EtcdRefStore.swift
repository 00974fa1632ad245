public import KbuildCore
public import KbuildState
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat

/// The ref store on etcd (Raft, many machines): the same `RefStore` and
/// conformance suite as `SQLiteRefStore`, over etcd's JSON gateway.
///
/// A revision is etcd's own: every change is one txn, and etcd's revision
/// of that txn is the change's. A compare-and-swap reads the ref and its
/// sequence key, checks the expectation, then writes in one txn that holds
/// only if neither key moved since: the ref, its sequence, its change (a
/// log key of its own, never rewritten, so compaction keeps it) and the
/// head key. A txn that lost to another writer reads again: if the
/// expectation still holds (a `.value` whose value came back, `.any`) it
/// tries again, else it is the conflict it would have been.
///
/// The history (`history`, `changes`, reads at a past revision) is read
/// from the log keys, so it outlives etcd's compaction; a watch follows
/// etcd's watch of the log keys and, when etcd has compacted past where it
/// resumes, reads what it missed from them.
public struct EtcdRefStore: RefStore {
    public let etcd: EtcdClient
    public let keys: EtcdKeys
    /// How long one watch request is held open when nothing changes.
    var watchHold: TimeAmount = .seconds(20)
    /// A term this store writes in (`EtcdElection`): each compare-and-swap also holds only while this
    /// key still has this create revision, so a holder that lost its role writes nothing more.
    var term: (key: Data, createRevision: Int64)?

    /// This store, writing only while `key` (a role's leader key) is the one made at `createRevision`.
    func fenced(by key: Data, createRevision: Int64) -> EtcdRefStore {
        var s = self
        s.term = (key, createRevision)
        return s
    }

    public init(etcd: EtcdClient, keys: EtcdKeys = EtcdKeys()) {
        self.etcd = etcd
        self.keys = keys
    }

    struct RefValue: Codable { var kid: KID; var version: Int64 }
    struct SeqValue: Codable { var seq: Int64; var version: Int64 }
    struct LogValue: Codable { var old: KID?; var new: KID?; var version: Int64; var time: Double; var actor: String }

    // MARK: - Now

    public func get(_ name: RefName) async throws -> Ref? {
        let answer = try await etcd.range(.init(key: keys.ref(name)))
        return try answer.all.first.map { try ref(name, $0) }
    }

    public func list(prefix: RefName?) async throws -> [Ref] {
        var refs: [Ref] = []
        for kv in try await rangeAll(keys.refRanges(prefix)).kvs {
            guard let name = keys.parseRef(kv.key) else { continue }
            refs.append(try ref(name, kv))
        }
        return refs.sorted { $0.name.rawValue < $1.name.rawValue }
    }

    public func currentRevision() async throws -> Revision {
        let answer = try await etcd.range(.init(key: keys.head))
        return Revision(answer.all.first?.modRevision ?? 0)
    }

    @discardableResult
    public func compareAndSwap(_ name: RefName, to kid: KID?, expecting: RefExpectation, actor: String) async throws -> RefChange {
        for _ in 0..<1000 {
            // Read the ref and its sequence in one snapshot.
            let read = try await etcd.call("/v3/kv/txn", EtcdWire.TxnRequest(success: [
                .range(.init(key: keys.ref(name))), .range(.init(key: keys.seq(name))),
            ] + (term.map { [.range(.init(key: $0.key, keys_only: true))] } ?? [])), idempotent: true) as EtcdWire.TxnResponse
            let ranges = read.ranges
            let refKV = ranges.first?.all.first, seqKV = ranges.dropFirst().first?.all.first
            if let term, ranges.dropFirst(2).first?.all.first?.createRevision != term.createRevision {
                throw KbuildError(.conflict, "failed to update ref \(name): the term that began at revision \(term.createRevision) is over (\(String(decoding: term.key, as: UTF8.self)) moved on)")
            }
            let current = try refKV.map { try ref(name, $0) }
            try expecting.check(current: current, name: name)
            if current == nil && kid == nil {
                throw KbuildError(.notFound, "failed to delete ref \(name): no such ref")
            }
            let seq = try seqKV.map { try decode(SeqValue.self, $0.bytes, what: "sequence of ref \(name)") } ?? SeqValue(seq: 0, version: 0)
            let version = kid == nil ? 0 : seq.version + 1
            let time = Date()
            let log = LogValue(old: current?.kid, new: kid, version: version, time: time.timeIntervalSince1970, actor: actor)
            var txn = EtcdWire.TxnRequest()
            txn.compare = [
                refKV.map { .modRevision(keys.ref(name), is: $0.modRevision) } ?? .createRevision(keys.ref(name), is: 0),
                seqKV.map { .modRevision(keys.seq(name), is: $0.modRevision) } ?? .createRevision(keys.seq(name), is: 0),
            ] + (term.map { [.createRevision($0.key, is: $0.createRevision)] } ?? [])
            txn.success = [
                kid.map { .put(.init(key: keys.ref(name), value: try! encode(RefValue(kid: $0, version: version)))) } ?? .delete(keys.ref(name)),
                .put(.init(key: keys.seq(name), value: try encode(SeqValue(seq: seq.seq + 1, version: max(seq.version, version))))),
                .put(.init(key: keys.log(name, seq: seq.seq + 1), value: try encode(log))),
                .put(.init(key: keys.head, value: Data())),
            ]
            let answer = try await etcd.txn(txn)
            if answer.ok {
                return RefChange(revision: Revision(answer.header?.rev ?? 0), name: name, old: current?.kid, new: kid,
                                 version: version, time: time, actor: actor)
            }
            // Another writer moved the ref first: look again (the expectation decides).
        }
        throw KbuildError(.conflict, "failed to update ref \(name): 1000 writers in a row moved it first")
    }

    // MARK: - History

    public func history(_ name: RefName, limit: Int?) async throws -> [RefChange] {
        let (start, end) = keys.logOf(name)
        var request = EtcdWire.RangeRequest(key: start, range_end: end, sort_order: "DESCEND", sort_target: "KEY")
        if let limit { request.limit = .init(Int64(max(1, limit))) }
        return try await etcd.range(request).all.compactMap(change)
    }

    public func changes(prefix: RefName?, after: Revision, limit: Int) async throws -> [RefChange] {
        try await changesAndRevision(prefix: prefix, after: after, limit: limit).changes
    }

    /// The changes after `after`, and the revision the answer is as of (nothing under `prefix` changed after
    /// `after` up to it when the answer is empty).
    func changesAndRevision(prefix: RefName?, after: Revision, limit: Int) async throws -> (changes: [RefChange], revision: Int64) {
        let ranges = keys.logRanges(prefix)
        let answer = try await etcd.call("/v3/kv/txn", EtcdWire.TxnRequest(success: ranges.map { start, end in
            .range(.init(key: start, range_end: end, limit: .init(Int64(max(1, limit))), sort_order: "ASCEND", sort_target: "MOD",
                         min_mod_revision: .init(after.value + 1)))
        }), idempotent: true) as EtcdWire.TxnResponse
        let merged = answer.ranges.flatMap(\.all).compactMap(change).sorted { $0.revision < $1.revision }
        return (Array(merged.prefix(limit)), answer.header?.rev ?? 0)
    }

    public func get(_ name: RefName, at: Revision) async throws -> Ref? {
        guard at.value > 0 else { return nil }
        let (start, end) = keys.logOf(name)
        let answer = try await etcd.range(.init(key: start, range_end: end, limit: .init(1), sort_order: "DESCEND", sort_target: "KEY",
                                                max_mod_revision: .init(at.value)))
        return answer.all.first.flatMap(change).flatMap(refThen)
    }

    public func list(prefix: RefName?, at: Revision) async throws -> [Ref] {
        guard at.value > 0 else { return [] }
        let ranges = keys.logRanges(prefix)
        let answer = try await etcd.call("/v3/kv/txn", EtcdWire.TxnRequest(success: ranges.map { start, end in
            .range(.init(key: start, range_end: end, max_mod_revision: .init(at.value)))
        }), idempotent: true) as EtcdWire.TxnResponse
        // Each name's last change at or before `at` (log keys sort by name, then sequence).
        var last: [RefName: RefChange] = [:]
        for c in answer.ranges.flatMap(\.all).compactMap(change) where (last[c.name]?.revision ?? .zero) < c.revision {
            last[c.name] = c
        }
        return last.values.compactMap(refThen).sorted { $0.name.rawValue < $1.name.rawValue }
    }

    // MARK: - Watch

    public func watch(prefix: RefName?, after: Revision) -> RefWatch {
        RefWatch(after: after, fetch: { last in try await self.nextChanges(prefix: prefix, after: last) }, wait: {
            // The fetch itself waited on etcd; this only spaces out a watch that ended with nothing.
            try await Task.sleep(for: .milliseconds(20))
        })
    }

    /// The next changes after `last`: from etcd's watch of the log keys, held
    /// up to `watchHold`; from the log keys themselves when etcd compacted
    /// past `last` (its watch is cancelled with a compact revision).
    func nextChanges(prefix: RefName?, after last: Revision) async throws -> [RefChange] {
        var from = last.value
        while true {
            let (start, end) = keys.watchRange(prefix)
            let create = EtcdWire.WatchRequest(create_request: .init(key: start, range_end: end, start_revision: .init(from + 1)))
            let (response, url) = try await etcd.open("/v3/watch", try JSONEncoder().encode(create), timeout: .seconds(15), idempotent: true)
            guard response.status == .ok else {
                let body = Data(buffer: try await response.body.collect(upTo: 1 << 20))
                let _: EtcdWire.WatchMessage = try EtcdClient.decode(EtcdWire.WatchMessage.self, body, status: response.status, url: url)
                throw KbuildError(.io, "etcd at \(url) refused a watch: \(response.status.code)")
            }
            // The request's deadline ends with the answer's head: the stream is held for `watchHold` here,
            // so a member that went silent (cut off, half-open) holds a watcher no longer than that.
            let outcome = try await withThrowingTaskGroup(of: WatchOutcome.self) { group in
                group.addTask { try await self.read(response.body, url: url, prefix: prefix) }
                group.addTask {
                    try await Task.sleep(for: .nanoseconds(self.watchHold.nanoseconds))
                    return .ended
                }
                let first = try await group.next() ?? .ended
                group.cancelAll()
                return first
            }
            switch outcome {
            case .changes(let changes):
                return changes
            case .ended:
                try Task.checkCancellation()
                return []
            case .compacted:
                // Compacted past `from`: the log keys still hold every change.
                let missed = try await changesAndRevision(prefix: prefix, after: Revision(from), limit: 1000)
                if !missed.changes.isEmpty { return missed.changes }
                guard missed.revision > from else { return [] }
                from = missed.revision
            }
        }
    }

    enum WatchOutcome: Sendable {
        case changes([RefChange])
        case compacted
        case ended
    }

    /// Reads one watch stream until it brings changes under `prefix`, is cancelled for compaction, or ends.
    func read(_ body: HTTPClientResponse.Body, url: String, prefix: RefName?) async throws -> WatchOutcome {
        var pending = Data()
        do {
            for try await chunk in body {
                pending.append(contentsOf: chunk.readableBytesView)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = pending[pending.startIndex..<newline]
                    pending = Data(pending[(newline + 1)...])
                    if line.allSatisfy({ $0 == 0x20 || $0 == 0x0d }) { continue }
                    let message = try EtcdClient.decode(EtcdWire.WatchMessage.self, Data(line), status: .ok, url: url)
                    if let error = message.error {
                        throw KbuildError(.io, "etcd at \(url) ended a watch: \(error.message ?? error.error ?? "no reason given")")
                    }
                    guard let result = message.result else { continue }
                    if result.canceled == true {
                        guard result.compact_revision != nil else {
                            throw KbuildError(.io, "etcd at \(url) cancelled a watch: \(result.cancel_reason ?? "no reason given")")
                        }
                        return .compacted
                    }
                    let changes = (result.events ?? []).filter(\.isPut).compactMap { $0.kv.flatMap(change) }.filter { within(prefix, $0.name) }
                    if !changes.isEmpty { return .changes(changes) }
                }
            }
        } catch let e as HTTPClientError where e == .deadlineExceeded || e == .readTimeout || e == .cancelled || e == .remoteConnectionClosed {
            return .ended
        }
        return .ended
    }

    // MARK: - Plumbing

    /// Every key in the ranges as of one revision, page by page.
    func rangeAll(_ ranges: [(Data, Data)]) async throws -> (kvs: [EtcdWire.KeyValue], revision: Int64) {
        var kvs: [EtcdWire.KeyValue] = []
        var revision: Int64 = 0
        for (start, end) in ranges {
            var from = start
            while true {
                var request = EtcdWire.RangeRequest(key: from, range_end: end, limit: .init(5000))
                if revision > 0 { request.revision = .init(revision) }
                let page = try await etcd.range(request)
                if revision == 0 { revision = page.header?.rev ?? 0 }
                kvs += page.all
                guard page.more == true, let lastKey = page.all.last?.key else { break }
                from = lastKey + [0]
            }
        }
        return (kvs, revision)
    }

    func within(_ prefix: RefName?, _ name: RefName) -> Bool {
        guard let prefix else { return true }
        return name == prefix || name.rawValue.hasPrefix(prefix.rawValue + "/")
    }

    func ref(_ name: RefName, _ kv: EtcdWire.KeyValue) throws -> Ref {
        let value = try decode(RefValue.self, kv.bytes, what: "ref \(name)")
        return Ref(name: name, kid: value.kid, revision: Revision(kv.modRevision), version: value.version)
    }

    /// A change from its log key; a key that does not decode is named on stderr and skipped, never fatal.
    func change(_ kv: EtcdWire.KeyValue) -> RefChange? {
        guard let (name, _) = keys.parseLog(kv.key) else {
            EtcdRefStore.skipped(kv.key, "not a change's key")
            return nil
        }
        do {
            let v = try decode(LogValue.self, kv.bytes, what: "change of \(name)")
            return RefChange(revision: Revision(kv.modRevision), name: name, old: v.old, new: v.new, version: v.version,
                             time: Date(timeIntervalSince1970: v.time), actor: v.actor)
        } catch {
            EtcdRefStore.skipped(kv.key, "\(error)")
            return nil
        }
    }

    func refThen(_ c: RefChange) -> Ref? {
        c.new.map { Ref(name: c.name, kid: $0, revision: c.revision, version: c.version) }
    }

    static func skipped(_ key: Data, _ why: String) {
        FileHandle.standardError.write(Data("kbuild: skipped etcd key \(String(decoding: key, as: UTF8.self).debugQuoted): \(why)\n".utf8))
    }

    func decode<T: Decodable>(_ type: T.Type, _ bytes: Data, what: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: bytes)
        } catch {
            throw KbuildError(.corrupt, "failed to read the \(what) in etcd (\(etcd.spec)): \(EtcdClient.preview(bytes)) is not kbuild's")
        }
    }

    func encode<T: Encodable>(_ value: T) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return try e.encode(value)
    }
}
