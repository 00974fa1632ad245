// Stand-in for Sources/GitGateway/AppStore.swift (the Keg, the ref store, git)
// in the fuzz build: only the namespace. `AppStore.checkName`, which
// GitShell.parse calls, is the real one (Sources/GitGateway/AppStore+Name.swift).
public struct AppStore: Sendable {}
