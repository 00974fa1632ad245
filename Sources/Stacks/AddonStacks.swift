import OCI
import KbuildCore
import Foundation
import KbuildState

/// Add-on stacks: a Debian stack's run image plus one layer with the
/// servers kbuild runs as add-ons (Debian's PostgreSQL and Redis) and the
/// scripts that start them. `debian-12-addons` has PostgreSQL 15 and Redis 7,
/// `debian-13-addons` PostgreSQL 17 and Redis 8.
extension StackStore {
    public static let addonsSuffix = "-addons"
    public static let addonPackages = ["postgresql", "redis-server"]

    /// Makes `NAME-addons` over the run image of `base` (which must exist):
    /// the packages installed in an overlay over its layers, whose upper dir
    /// is the add-on layer, as a build image's is made.
    func createAddons(base: String, name: String, actor: String, log: @Sendable (String) -> Void) async throws -> Stack {
        try StackStore.checkName(name)
        let baseStack: Stack
        do {
            baseStack = try await get(base)
        } catch let e as KbuildError where e.code == .notFound {
            throw KbuildError(.notFound, "failed to make \(name): it is made over \(base), which is not here (kbuild stack create \(base) first)")
        }
        let work = keg.dataDir.kegTmp.path + "/stack-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fm = FileManager.default
        try fm.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: work) }
        let lowers = try baseStack.layers.reversed().map { try checkout($0) }
        let upper = work + "/layer", merged = work + "/merged", overlayWork = work + "/overlay-work"
        for dir in [upper, merged, overlayWork] { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        try StackStore.run("/bin/mount", ["-t", "overlay", "overlay", "-o", "lowerdir=\(lowers.joined(separator: ":")),upperdir=\(upper),workdir=\(overlayWork)", merged],
                           what: "mount the add-on layer's overlay")
        var mounted = true
        defer { if mounted { _ = try? StackStore.run("/bin/umount", [merged]) } }
        // No cluster made at install (the add-on makes its own on its volume), no service started in the chroot.
        try fm.createDirectory(atPath: merged + "/etc/postgresql-common", withIntermediateDirectories: true)
        try Data("create_main_cluster = false\n".utf8).write(to: URL(fileURLWithPath: merged + "/etc/postgresql-common/createcluster.conf"))
        try Data("#!/bin/sh\nexit 101\n".utf8).write(to: URL(fileURLWithPath: merged + "/usr/sbin/policy-rc.d"))
        chmod(merged + "/usr/sbin/policy-rc.d", 0o755)
        log("installing the add-on layer's packages: \(StackStore.addonPackages.joined(separator: " "))")
        // The stored image has no device nodes (bookworm's apt-key writes to /dev/null): a /dev of their own while apt runs, not in the layer.
        try fm.createDirectory(atPath: merged + "/dev", withIntermediateDirectories: true)
        try StackStore.run("/bin/mount", ["-t", "tmpfs", "-o", "mode=0755,size=64k,nosuid,noexec", "tmpfs", merged + "/dev"], what: "mount /dev for apt")
        var devMounted = true
        defer { if devMounted { _ = try? StackStore.run("/bin/umount", [merged + "/dev"]) } }
        for (node, minor) in [("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)] {
            guard mknod(merged + "/dev/" + node, S_IFCHR | 0o666, dev_t((1 << 8) | minor)) == 0, chmod(merged + "/dev/" + node, 0o666) == 0 else {
                throw KbuildError.syscall("mknod", merged + "/dev/" + node, verb: "make the add-on stack")
            }
        }
        try StackStore.aptInstall(StackStore.addonPackages, root: merged)
        try StackStore.run("/bin/umount", [merged + "/dev"], what: "unmount apt's /dev")
        devMounted = false
        unlink(merged + "/usr/sbin/policy-rc.d")
        try fm.createDirectory(atPath: merged + "/usr/local/lib/kbuild", withIntermediateDirectories: true)
        for kind in AddonKind.allCases {
            let path = merged + "/usr/local/lib/kbuild/addon-\(kind.rawValue)"
            try Data(StackStore.addonScript(kind).utf8).write(to: URL(fileURLWithPath: path))
            chmod(path, 0o755)
        }
        try StackStore.clean(root: merged)
        let postgres = try StackStore.run("/usr/sbin/chroot", [merged, "/bin/sh", "-c", "ls /usr/lib/postgresql | sort -n | tail -n 1"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let redis = try StackStore.run("/usr/sbin/chroot", [merged, "/bin/sh", "-c", "dpkg-query -W -f='${Version}' redis-server"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try StackStore.run("/bin/umount", [merged], what: "unmount the add-on layer's overlay")
        mounted = false
        try StackStore.removeWhiteouts(upper)
        log("storing \(name) in the keg (PostgreSQL \(postgres), Redis \(StackStore.upstreamVersion(redis)))")
        let layer = try images.putLayer(directory: upper).layer
        let baseConfig = try images.config(of: baseStack.manifest).config
        var labels = baseConfig?.Labels ?? [:]
        labels["dev.kbuild.stack"] = name
        labels["dev.kbuild.addon.postgres"] = postgres
        labels["dev.kbuild.addon.redis"] = StackStore.upstreamVersion(redis)
        let image = try images.putImage(
            layers: baseStack.manifest.layers + [layer],
            config: ImageConfig.Config(Env: StackStore.debianEnvironment, Cmd: ["/bin/sh"], WorkingDir: "/", Labels: labels),
            createdBy: "kbuild stack create \(name) (\(base)'s run image + \(StackStore.addonPackages.joined(separator: " ")))",
            annotations: ["org.opencontainers.image.ref.name": name])
        _ = try await refs.compareAndSwap(try StackStore.refName(name), to: image, expecting: .any, actor: actor)
        return try await get(name)
    }

    /// `5:7.0.15-1~deb12u4` as `7.0.15`.
    static func upstreamVersion(_ debian: String) -> String {
        let noEpoch = debian.split(separator: ":", maxSplits: 1).last.map(String.init) ?? debian
        return String(noEpoch.prefix { $0 != "-" && $0 != "~" && $0 != "+" })
    }

    /// The script an add-on's process runs: its server on the volume at
    /// /data, as its own user, on $PORT, with the password (and for
    /// PostgreSQL, the TLS certificate) from its config, set again at every
    /// start so that a rotation takes effect with the restart it causes.
    static func addonScript(_ kind: AddonKind) -> String {
        switch kind {
        case .postgres:
            return """
                #!/bin/sh
                # kbuild's PostgreSQL add-on (written by kbuild stack create).
                set -eu
                bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
                data=/data/postgres
                as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
                case "$KBUILD_ADDON_PASSWORD" in *[!0-9a-f]*|"") echo "kbuild: KBUILD_ADDON_PASSWORD must be hex" >&2; exit 2;; esac
                mkdir -p /run/postgresql && chown postgres:postgres /run/postgresql
                if [ ! -s "$data/PG_VERSION" ]; then
                  rm -rf "$data.new" && mkdir -p "$data.new" && chown postgres:postgres "$data.new" && chmod 700 "$data.new"
                  umask 077
                  # The superuser is postgres, reached only by peer on the socket inside; the app's role owns its database, no more.
                  as_postgres "$bin/initdb" -D "$data.new" -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
                  # One statement per line, each its own command (CREATE DATABASE runs in no transaction block).
                  printf 'CREATE ROLE \(AddonRecord.user) LOGIN CREATEDB;\\nCREATE DATABASE \(AddonRecord.database) OWNER \(AddonRecord.user);\\n' \\
                    | as_postgres "$bin/postgres" --single -D "$data.new" postgres >/dev/null
                  # Whole or not at all: a start that died half-way begins again.
                  mv "$data.new" "$data"
                  echo "kbuild: made a new PostgreSQL $(cat "$data/PG_VERSION") cluster"
                fi
                # Certificate, key and pg_hba in a directory of root's, made at each start (never in the data directory
                # postgres owns, where root would follow its links): TLS only over TCP, and passwords.
                conf=/etc/kbuild-postgres
                rm -rf "$conf" && mkdir -m 0750 "$conf" && chgrp postgres "$conf"
                umask 027
                printf '%s\\n' "$KBUILD_ADDON_TLS_CERT" > "$conf/server.crt"
                printf '%s\\n' "$KBUILD_ADDON_TLS_KEY" > "$conf/server.key"
                printf 'local all all peer\\nhostssl all all 0.0.0.0/0 scram-sha-256\\nhostssl all all ::/0 scram-sha-256\\n' > "$conf/pg_hba.conf"
                chgrp postgres "$conf/server.crt" "$conf/server.key" "$conf/pg_hba.conf"
                # The password again (a rotation takes effect with the restart it causes); a failure does not print the statement.
                echo "ALTER ROLE \(AddonRecord.user) PASSWORD '$KBUILD_ADDON_PASSWORD';" \\
                  | as_postgres "$bin/postgres" --single -D "$data" -c log_min_error_statement=panic postgres >/dev/null
                # wal_level=minimal (no replicas here): a restore's COPY into the tables it makes in its one transaction
                # writes no WAL, so a test restore beside the live database cannot fill the volume with WAL.
                exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$bin/postgres" -D "$data" \\
                  -c listen_addresses='*' -c port="$PORT" -c unix_socket_directories=/run/postgresql \\
                  -c wal_level=minimal -c max_wal_senders=0 \\
                  -c ssl=on -c ssl_cert_file="$conf/server.crt" -c ssl_key_file="$conf/server.key" -c password_encryption=scram-sha-256 \\
                  -c hba_file="$conf/pg_hba.conf" -c logging_collector=off -c log_destination=stderr
                """
        case .redis:
            return """
                #!/bin/sh
                # kbuild's Redis add-on (written by kbuild stack create).
                set -eu
                case "$KBUILD_ADDON_PASSWORD" in *[!0-9a-f]*|"") echo "kbuild: KBUILD_ADDON_PASSWORD must be hex" >&2; exit 2;; esac
                mkdir -p /data/redis && chown redis:redis /data/redis && chmod 700 /data/redis
                umask 077
                printf 'bind 0.0.0.0\\nport %s\\nprotected-mode no\\nrequirepass %s\\ndir /data/redis\\nappendonly yes\\nappendfsync everysec\\ndaemonize no\\nlogfile ""\\n' \\
                  "$PORT" "$KBUILD_ADDON_PASSWORD" > /tmp/redis.conf
                chown redis:redis /tmp/redis.conf
                exec setpriv --reuid=redis --regid=redis --init-groups -- redis-server /tmp/redis.conf
                """
        }
    }
}
