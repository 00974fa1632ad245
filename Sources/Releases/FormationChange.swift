import KbuildCore
import Builds
public import KbuildState

/// One `ps:scale` argument: `web=3`, `worker=0`, `web=2:1G` (memory), `web=2:1G:1.5` (memory and CPUs).
public struct FormationChange: Sendable, Equatable {
    public var type: String
    public var quantity: Int
    public var memory: UInt64?
    public var cpus: Double?

    public init(type: String, quantity: Int, memory: UInt64? = nil, cpus: Double? = nil) {
        self.type = type
        self.quantity = quantity
        self.memory = memory
        self.cpus = cpus
    }

    public init(parsing arg: String) throws {
        guard let eq = arg.firstIndex(of: "=") else {
            throw KbuildError(.invalidArgument, "invalid scale \(arg.debugQuoted): want TYPE=COUNT, e.g. web=3")
        }
        type = String(arg[..<eq])
        guard BuildFiles.isProcessType(type) else {
            throw KbuildError(.invalidArgument, "invalid process type \(type.debugQuoted) in \(arg.debugQuoted)")
        }
        let parts = arg[arg.index(after: eq)...].split(separator: ":", omittingEmptySubsequences: false)
        guard (1...3).contains(parts.count), let n = Int(parts[0]) else {
            throw KbuildError(.invalidArgument, "invalid scale \(arg.debugQuoted): want TYPE=COUNT[:MEMORY[:CPUS]], e.g. web=3 or web=2:1G")
        }
        guard n >= 0 else {
            throw KbuildError(.invalidArgument, "invalid scale \(arg.debugQuoted): a count cannot be negative")
        }
        guard n <= ProcessFormation.maxQuantity else {
            throw KbuildError(.invalidArgument, "invalid scale \(arg.debugQuoted): at most \(ProcessFormation.maxQuantity) processes of one type")
        }
        quantity = n
        memory = nil
        cpus = nil
        if parts.count >= 2 {
            let m = try parseBytes(String(parts[1]), what: "memory in \(arg.debugQuoted)")
            guard m >= 16 << 20, m <= 1 << 40 else {
                throw KbuildError(.invalidArgument, "invalid scale \(arg.debugQuoted): memory must be from 16M to 1T")
            }
            memory = m
        }
        if parts.count == 3 {
            guard let c = Double(parts[2]), c.isFinite, c >= 0.01, c <= 256 else {
                throw KbuildError(.invalidArgument, "invalid scale \(arg.debugQuoted): CPUs must be a number from 0.01 to 256")
            }
            cpus = c
        }
    }

    /// The formation after these changes.
    public static func apply(_ changes: [FormationChange], to formation: [String: ProcessFormation]) -> [String: ProcessFormation] {
        var next = formation
        for c in changes {
            var f = next[c.type] ?? ProcessFormation(quantity: 0)
            f.quantity = c.quantity
            if let m = c.memory { f.memory = m }
            if let cpus = c.cpus { f.cpus = cpus }
            next[c.type] = f
        }
        return next
    }
}
