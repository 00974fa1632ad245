#!/usr/bin/env python3
"""PostgreSQL backups in the Keg against the same dumps gzipped to files, in
the same run, beside the same add-on.

A `kbuild up` in a data dir of its own runs a PostgreSQL add-on (the newest
add-on stack there; without one, `debian-13` and `debian-13-addons` are made
first, about five minutes). The database is filled to --mb megabytes (one
table of random-looking text rows), then --backups times: about 1% of the
rows are changed, and

  kbuild    `pg:backups:capture`: pg_dump -Fc -Z0 streamed into the Keg
            (deduplicated by its content-defined chunks), then a test restore
            into a scratch database. Measured: the Keg's packs' growth on disk,
            and the dump's seconds as the backup record has them.
  peer      what a cron + pg_dump user (and Dokku's postgres plugin) keeps:
            `pg_dump -Fc | gzip` to a file, beside the add-on (the same
            one-off sandbox and network). Measured: the file's bytes, and the
            seconds of `pg_dump -Fc -Z0 > /dev/null` (pg_dump alone).

Printed: bytes stored per extra backup (the first is left out: both store a
whole dump then), kbuild / gzip (target <= 0.1); median capture seconds
(the dump into the Keg) / pg_dump alone (target <= 1.5); and the restore of
the last backup, `pg:backups:restore` against gunzip | pg_restore --clean.

Usage: python3 benchmarks/pg_backups.py [--mb 500] [--backups 20] [--changes spread|block] [--data DIR]
Needs root; builds nothing: run `swift build -c release` first (it uses .build/release/kbuild).
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KBUILD = os.path.join(ROOT, ".build/release/kbuild")


def kb(data, *args, check=True, timeout=7200):
    r = subprocess.run([KBUILD, *args], capture_output=True, text=True, env={**os.environ, "KBUILD_DATA_DIR": data}, timeout=timeout)
    if check and r.returncode != 0:
        sys.exit(f"kbuild {' '.join(args)} failed ({r.returncode}): {r.stderr[-800:]} {r.stdout[-400:]}")
    return r


def packs_bytes(data):
    total = 0
    for name in os.listdir(os.path.join(data, "keg/packs")):
        total += os.stat(os.path.join(data, "keg/packs", name)).st_blocks * 512
    objects = os.path.join(data, "keg/objects")
    for d, _, files in os.walk(objects):
        for f in files:
            total += os.stat(os.path.join(d, f)).st_blocks * 512
    return total


def beside(data, addon, script):
    """A shell script in a one-off of the add-on's app: pg_dump and psql there reach it."""
    return kb(data, "run", addon, "-n", "--", "sh", "-c", script)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--backups", type=int, default=20)
    ap.add_argument("--data", help="a data dir to use (kept); default: a new one (removed)")
    ap.add_argument("--changes", choices=["spread", "block"], default="spread",
                    help="spread: every 100th row (1%% of rows, in every part of the table); block: 1%% of the rows in one id range")
    args = ap.parse_args()
    if not os.access(KBUILD, os.X_OK):
        sys.exit(f"{KBUILD} is missing: swift build -c release --product kbuild && swift build -c release --product kbuild-sandbox")
    data = args.data or tempfile.mkdtemp(prefix="kbuild-pg-bench-")
    os.chmod(data, 0o700)
    stacks = kb(data, "stack", "ls").stdout
    if "-addons" not in stacks:
        print("making the debian-13 and debian-13-addons stacks (about five minutes)", flush=True)
        kb(data, "stack", "create", "busybox")
        kb(data, "stack", "create", "debian-13")
        kb(data, "stack", "create", "debian-13-addons")
    # Room on the node for the add-on and the one-off runs beside it, whatever this machine's cores.
    up = subprocess.Popen([KBUILD, "up", "--data-dir", data, "--port", "0", "--router-port", "0", "--tls-port", "0", "--node-cpus", "16"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(os.path.join(data, "server.url")):
                break
            time.sleep(0.2)
        # What an earlier run in a kept data dir left goes first.
        kb(data, "addons:destroy", "pgbench-postgres", "--app", "pgbench", "--confirm", "pgbench-postgres", "--force", check=False)
        kb(data, "apps:destroy", "pgbench", "--confirm", "pgbench", "--volumes", check=False)
        time.sleep(5)
        kb(data, "apps:create", "pgbench", "--stack", "busybox")
        made = kb(data, "addons:create", "postgres", "--app", "pgbench", "--size", f"{max(2, args.mb * 6 // 1024)}G").stdout
        addon = "pgbench-postgres"
        print(made.strip(), flush=True)
        url = kb(data, "config:get", "pgbench", "DATABASE_URL").stdout.strip()
        host = re.search(r"@([0-9.]+):(\d+)/", url)
        conn = f'PGPASSWORD="$KBUILD_ADDON_PASSWORD" psql -h {host.group(1)} -p {host.group(2)} -U kbuild -qAt kbuild'
        dump = f'PGPASSWORD="$KBUILD_ADDON_PASSWORD" pg_dump -h {host.group(1)} -p {host.group(2)} -U kbuild -Fc'
        rows = args.mb * 1024 * 1024 // 330
        print(f"filling {args.mb} MB ({rows} rows)", flush=True)
        beside(data, addon, f"{conn} -c \"create table t (id bigint primary key, v int not null, pad text not null); "
                            f"insert into t select g, 0, repeat(md5(g::text), 8) from generate_series(1, {rows}) g\" -c \"vacuum analyze t\"")
        size = beside(data, addon, f"{conn} -c \"select pg_database_size('kbuild')\"").stdout.strip()
        print(f"database: {int(size) / 1e6:.0f} MB", flush=True)

        keg_growth, gzip_sizes, capture_s, alone_s = [], [], [], []
        for i in range(1, args.backups + 1):
            where = f"id % 100 = {i % 100}" if args.changes == "spread" else f"id > {(i * rows // 7) % rows} and id <= {(i * rows // 7) % rows + rows // 100}"
            beside(data, addon, f"{conn} -c \"update t set v = v + 1, pad = repeat(md5(random()::text), 8) where {where}\"")
            before = packs_bytes(data)
            t = time.perf_counter()
            out = kb(data, "pg:backups:capture", "pgbench").stdout
            wall = time.perf_counter() - t
            if "verified" not in out:
                sys.exit(f"backup {i} failed: {out}")
            keg_growth.append(packs_bytes(data) - before)
            record = [b for b in __import__("json").loads(kb(data, "pg:backups", "pgbench", "--json").stdout) if b["state"] == "verified"][-1]
            capture_s.append(record["dumpSeconds"])
            t = time.perf_counter()
            beside(data, addon, f"{dump} -Z0 kbuild > /dev/null")
            alone_s.append(time.perf_counter() - t)
            gz = beside(data, addon, f"{dump} kbuild | gzip > /tmp/b.dump.gz && stat -c %s /tmp/b.dump.gz").stdout.strip()
            gzip_sizes.append(int(gz))
            print(f"backup {i:2}: keg +{keg_growth[-1] / 1e6:8.2f} MB  gzip {gzip_sizes[-1] / 1e6:8.2f} MB  "
                  f"dump into the Keg {capture_s[-1]:6.2f} s  pg_dump alone {alone_s[-1]:6.2f} s  (capture with its test restore {wall:6.1f} s)", flush=True)

        last = f"b{args.backups:03d}"
        t = time.perf_counter()
        kb(data, "pg:backups:restore", "pgbench", last, "--confirm", addon)
        restore_kbuild = time.perf_counter() - t
        t = time.perf_counter()
        beside(data, addon, f"{dump} kbuild | gzip > /tmp/b.dump.gz && "
                            f"gunzip -c /tmp/b.dump.gz | PGPASSWORD=\"$KBUILD_ADDON_PASSWORD\" pg_restore -h {host.group(1)} -p {host.group(2)} "
                            f"-U kbuild -d kbuild --clean --if-exists --no-owner --single-transaction")
        restore_peer = time.perf_counter() - t  # includes making the gzip file, which a cron user has already: an upper bound

        extra_keg = statistics.median(keg_growth[1:]) if len(keg_growth) > 1 else keg_growth[0]
        extra_gzip = statistics.median(gzip_sizes[1:]) if len(gzip_sizes) > 1 else gzip_sizes[0]
        print()
        print(f"| {args.backups} backups of {int(size) / 1e6:.0f} MB, ~1% rows changed each ({args.changes}) | kbuild (Keg) | gzip files | ratio | target |")
        print("|---|---|---|---|---|")
        print(f"| bytes stored per extra backup (median) | {extra_keg / 1e6:.2f} MB | {extra_gzip / 1e6:.2f} MB | {extra_keg / extra_gzip:.3f} | <= 0.1 |")
        print(f"| all {args.backups} backups | {sum(keg_growth) / 1e6:.1f} MB | {sum(gzip_sizes) / 1e6:.1f} MB | {sum(keg_growth) / sum(gzip_sizes):.3f} | |")
        print(f"| capture: dump into the Keg vs pg_dump alone (median s) | {statistics.median(capture_s):.2f} | {statistics.median(alone_s):.2f} | "
              f"{statistics.median(capture_s) / statistics.median(alone_s):.2f} | <= 1.5 |")
        print(f"| restore of the last backup (s) | {restore_kbuild:.2f} | {restore_peer:.2f} (with its dump) | {restore_kbuild / restore_peer:.2f} | |")
    finally:
        up.terminate()
        try:
            up.wait(timeout=20)
        except subprocess.TimeoutExpired:
            up.kill()
        kb(data, "down", "--grace", "2", check=False)
        if not args.data:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
