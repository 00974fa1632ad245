// fuzz-modules: Releases KbuildState Builds KbuildCore
// `ps:scale` and `config:set` arguments, as the API takes them from any
// token-holder → FormationChange(parsing:), ConfigVars.parseAssignments and applying.
import Builds
import KbuildCore
import Releases
import KbuildState

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = fuzzText(start, count)
    if let change = try? FormationChange(parsing: text) {
        require(BuildFiles.isProcessType(change.type), "type \(change.type.debugQuoted)")
        require((0...ProcessFormation.maxQuantity).contains(change.quantity), "quantity \(change.quantity)")
        if let memory = change.memory { require(memory >= 16 << 20, "memory \(memory)") }
        if let cpus = change.cpus { require(cpus.isFinite && (0.01...256).contains(cpus), "cpus \(cpus)") }
    }
    // One argument per line, as config:set K=V K2=V2.
    let args = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if let vars = try? ConfigVars.parseAssignments(args) {
        for name in vars.keys {
            require(BuildFiles.isEnvironmentName(name) && !ConfigVars.isReserved(name), "config var name \(name.debugQuoted)")
        }
        if let next = try? ConfigVars().applying(set: vars, unset: []) {
            require(next.vars == vars, "applying changed the values")
            for value in next.vars.values { require(!value.utf8.contains(0), "a value with NUL") }
        }
    }
    return 0
}
