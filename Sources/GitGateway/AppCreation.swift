public import KbuildState
import Builds
import Foundation
import KbuildCore
import Stacks

extension AppStore {
    /// `apps:create` as every client asks for it (the CLI on the control
    /// plane, or `POST /api/v1/apps`): checks the request, resolves the stack
    /// alias to the concrete stack the app keeps, makes the app and its
    /// repository, and registers the shipped buildpacks.
    public func create(_ request: API.CreateApp, kbuild: String, actor: String) async throws -> AppRecord {
        try AppStore.checkName(request.name)
        // An add-on's name stays its own while the add-on is there (its app, its backups): no other app takes it.
        if try await refs.get(try Schema.addon(request.name)) != nil {
            throw KbuildError(.conflict, "\(request.name) is the name of an add-on; choose another name")
        }
        let limits = request.build ?? BuildLimits()
        guard limits.memory >= 16 << 20 else {
            throw KbuildError(.invalidArgument, "invalid build memory \(limits.memory) bytes: at least 16M")
        }
        guard limits.disk >= 16 << 20, limits.disk <= 1 << 40 else {
            throw KbuildError(.invalidArgument, "invalid build disk \(limits.disk) bytes: from 16M to 1T")
        }
        guard limits.timeout > 0, limits.timeout <= 7 * 86400 else {
            throw KbuildError(.invalidArgument, "invalid build timeout \(limits.timeout) s: more than 0, at most 7 days")
        }
        if let cpus = limits.cpus, !(cpus > 0 && cpus <= 1024) {
            throw KbuildError(.invalidArgument, "invalid build cpus \(cpus): more than 0")
        }
        guard limits.pids >= 16 else { throw KbuildError(.invalidArgument, "invalid build pids \(limits.pids): at least 16") }
        let maxFileSize = request.maxFileSize ?? 100 << 20
        guard maxFileSize >= 1 << 10 else { throw KbuildError(.invalidArgument, "invalid max file size \(maxFileSize) bytes: at least 1K") }
        let network = try BuildNetwork(parsing: request.buildNetwork ?? BuildNetwork.egress.rawValue)
        let stack = try await StackStore(keg: keg, refs: refs).resolve(request.stack ?? "debian").name
        let record = AppRecord(name: request.name, stack: stack, deployBranch: request.deployBranch ?? "main", build: limits,
                               buildNetwork: network, maxFileSize: maxFileSize, createdBy: actor)
        try await create(record, kbuild: kbuild, actor: actor)
        try await BuildpackStore(keg: keg, refs: refs).registerShipped(actor: actor)
        return record
    }
}
