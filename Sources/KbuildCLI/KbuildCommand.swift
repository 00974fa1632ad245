public import ArgumentParser

/// `kbuild`: the user's verbs, and the programs that run kbuild itself (`up`).
public struct KbuildCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "kbuild",
        abstract: "Build and deploy from git push, content-addressed and traceable.",
        discussion: """
            Every command takes --data-dir (default ~/.kbuild, or $KBUILD_DATA_DIR).
            Start everything on this machine with `kbuild up`.
            """,
        version: KbuildVersion.text,
        subcommands: [
            UpCommand.self, DownCommand.self, WorkerCommand.self, AgentCommand.self, LoginCommand.self,
            AppsCreate.self, AppsList.self, AppsSet.self, BuildsCachePurge.self, AppsInfo.self, AppsLimits.self, AppsDestroy.self, GitRemote.self, KeysAdd.self, KeysList.self, KeysRemove.self, TokensCreate.self, TokensList.self, TokensRevoke.self,
            ConfigList.self, ConfigGet.self, ConfigSet.self, ConfigUnset.self, ReleasesList.self, ReleasesInfo.self, ReleasesOutput.self, ReleasesRollback.self,
            PsList.self, PsScale.self, PsRestart.self, NodesList.self, NodesJoinToken.self, WorkersJoinToken.self, NodesDrain.self, NodesUndrain.self, RunCommand.self, TraceCommand.self, DomainsList.self, DomainsAdd.self, DomainsRemove.self, RouterSettingsCommand.self, CertsList.self, CertsAdd.self, CertsRemove.self, CertsGenerate.self,
            VolumesList.self, VolumesInfo.self, VolumesCreate.self, VolumesMount.self, VolumesUnmount.self, VolumesDestroy.self,
            AddonsList.self, AddonsInfo.self, AddonsCreate.self, AddonsAttach.self, AddonsDetach.self, AddonsDestroy.self, AddonsRotateCredentials.self, AddonsUpgrade.self, PgPsql.self, PgInfo.self,
            PgBackups.self, PgBackupsCapture.self, PgBackupsRestore.self, PgBackupsDownload.self, PgBackupsImport.self, PgBackupsDelete.self,
            PgBackupsSchedule.self, PgBackupsUnschedule.self, RedisBackups.self, RedisBackupsCapture.self,
            ImageCommand.self, LogsCommand.self, BuildpackCommand.self, StackCommand.self, SandboxCommand.self, SourceCommand.self,
            KegCommand.self, RefCommand.self, VersionCommand.self, DashboardCommand.self, EtcdCommand.self, RouterCommand.self,
            GitShellCommand.self, GitCredential.self, HookCommand.self,
        ]
    )

    public init() {}
}

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The data directory (default ~/.kbuild, or $KBUILD_DATA_DIR).", valueName: "dir"))
    var dataDir: String?
}

/// The entry point of the `kbuild` executable.
public enum KbuildMain {
    public static func run() async {
        do {
            var command = try KbuildCommand.parseAsRoot()
            if let local = command as? any ControlPlaneOnly {
                try local.global.refuseRemote(type(of: local).verb)
            }
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            KbuildCommand.exit(withError: error)
        }
    }
}
