import KbuildCore

// Apart from AppStore.swift (which needs the Keg and the ref store) so that
// fuzz/ compiles GitShell.parse together with the real check.
extension AppStore {
    /// App names are DNS labels (`Names.isAppName`).
    public static func checkName(_ name: String) throws {
        guard Names.isAppName(name) else {
            throw KbuildError(.invalidArgument, "invalid app name \(name.debugQuoted): use 1 to 63 of a-z, 0-9 and '-', starting with a letter and not ending with '-'")
        }
    }
}
