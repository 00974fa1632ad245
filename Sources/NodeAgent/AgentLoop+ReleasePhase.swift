import Cluster
import KbuildCore
import Keg
import KegRemote
import KbuildState
import Sandbox
import Releases
import Foundation
import Synchronization

/// The release phase on a node: each `ReleaseTask` of the node's assignment runs once.
extension AgentLoop {
    /// Runs one release phase (`ReleasePhase`) to its end and writes how it went:
    /// the release's image, config vars and a network of its own, as its
    /// processes get them; its output in the node's log and, when it ends, the Keg.
    nonisolated func runReleasePhase(_ task: ReleaseTask) async {
        let actor = "agent \(config.name)"
        let path = config.stateDir + "/logs/\(task.id).log"
        /// Writes `record` if the ref still holds what it held (`expecting`): the KID written, or nil when it moved on.
        func write(_ record: ReleasePhaseRecord, expecting: RefExpectation) async -> KID? {
            do {
                let kid = try await Records.put(record, in: agent.records)
                try await agent.refs.compareAndSwap(try Schema.releasePhase(task.app), to: kid, expecting: expecting, actor: actor)
                return kid
            } catch {
                agent.log("agent \(config.name): the release phase of \(task.app) v\(task.version) not recorded: \(error)")
                return nil
            }
        }
        // Run once: a phase that started (here or on another node) is not run again; one this
        // node's previous agent was running died with it. Starting is a compare-and-swap, so two
        // nodes never both start it.
        let current = try? await agent.refs.get(try Schema.releasePhase(task.app))
        if let current, let done = try? await reader.record(ReleasePhaseRecord.self, current.kid, what: "release phase"), done.release == task.release {
            guard done.state == .running, done.node == config.name else { return }
            var lost = done
            lost.state = .failed
            lost.reason = "the node agent running it stopped"
            lost.liveLog = nil
            lost.finishedAt = Date()
            _ = await write(lost, expecting: .value(current.kid))
            return
        }
        // The live log is a path the control plane reads while it runs: only when it shares this node's disk (a node
        // that joined over the network sends the output when it ends).
        var record = ReleasePhaseRecord(app: task.app, release: task.release, version: task.version, command: task.command, state: .running,
                                        node: config.name, liveLog: agent.logSink == nil ? path : nil, startedAt: Date())
        guard let running = await write(record, expecting: current.map { .value($0.kid) } ?? .absent) else { return }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o600)
        // Its output is kept up to a cap (the rest is counted, not written): a release command cannot fill the node.
        let written = Mutex<Int>(0)
        let cap = ReleasePhase.outputCap
        var held: EgressNetwork.Link?
        do {
            guard fd >= 0 else { throw KbuildError.syscall("open", path, verb: "run the release phase of \(task.app)") }
            let launch = try await ProcessLaunch.prepare(release: task.release, image: task.image, config: task.config, app: task.app,
                                                         name: "release", id: task.id, port: nil, reader: reader, images: agent.keg, remote: agent.remote)
            let vars = try await reader.record(ConfigVars.self, task.config, what: "config").vars
            let timeout = ReleasePhase.timeout(vars)
            var network = config.network
            var mounts: [SandboxMount] = []
            if let egress = config.egress {
                let link = try await egress.make(port: nil)
                held = link
                network = .namespace("/run/netns/" + link.namespace)
                mounts += EgressNetwork.hostFiles()
                // Migrations reach the app's database.
                try await egress.grant(link, launch.release.reaches ?? [])
            }
            let spec = SandboxSpec(command: AppCommand.shell(task.command), lowerDirs: launch.lowerDirs, environment: launch.environment,
                                   workingDirectory: launch.workingDirectory, hostname: "release", mounts: mounts, network: network,
                                   limits: SandboxLimits(memory: task.memory, pids: 4096, cpus: task.cpus, timeout: .milliseconds(Int64(timeout * 1000))))
            let result = try await agent.sandbox.run(spec) { _, bytes in
                let room = written.withLock { total -> Int in
                    let room = max(0, min(bytes.count, cap - total))
                    total += bytes.count
                    return room
                }
                if room > 0 { _ = bytes.prefix(room).withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
            }
            let total = written.withLock { $0 }
            if total > cap {
                let note = Array("\n[kbuild: \(total - cap) more bytes of output were not kept (the cap is \(cap >> 20) MiB)]\n".utf8)
                _ = note.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            }
            switch result.termination {
            case .exited(0): record.state = .succeeded
            case .exited(let code): record.state = .failed; record.reason = "exit status \(code)"
            case .timedOut: record.state = .failed; record.reason = "it ran past its timeout of \(Int(timeout)) s (\(ReleasePhase.timeoutVar))"
            case .outOfMemory: record.state = .failed; record.reason = "it ran out of memory (\(task.memory >> 20) MiB)"
            default: record.state = .failed; record.reason = result.summary
            }
            record.exitStatus = result.exitStatus
        } catch {
            record.state = .failed
            record.reason = "it could not start: \((error as? KbuildError)?.message ?? "\(error)")"
        }
        if let held { await config.egress?.remove(held, port: nil) }
        if fd >= 0 { close(fd) }
        record.output = try? await agent.records.putLog(path: path)
        record.links = [task.release] + [record.output].compactMap { $0 }
        record.liveLog = nil
        record.finishedAt = Date()
        // A newer release's phase took the ref meanwhile: this one's result is moot, and is not written over it.
        _ = await write(record, expecting: .value(running))
        agent.log("agent \(config.name): the release phase of \(task.app) v\(task.version) \(record.state == .succeeded ? "succeeded" : "failed: \(record.reason ?? "")")")
    }
}
