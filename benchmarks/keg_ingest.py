#!/usr/bin/env python3
"""Keg ingest benchmark: kbuild vs casync vs restic, side by side, same data, same run.

Builds a tar of at least --size-mib of real files (from /usr/lib), then makes
--versions versions of it, each changing about 0.5 MB at random places (eight
64 KiB overwrites and one small insertion). Every tool ingests every version
straight after it is written (page cache warm), then each restores the last
version, which is checked byte for byte. Prints per tool: first ingest, median
later ingest (MB/s of wall time and MB per CPU-second), restore MB/s, and bytes
stored per extra version; then the ratios the issue sets as targets.

    python3 benchmarks/keg_ingest.py [--versions 64] [--size-mib 512] [--kbuild PATH]
"""
import argparse
import hashlib
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MB = 1_000_000


def run_timed(cmd, env=None):
    """Runs cmd; returns (wall seconds, cpu seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def apparent_bytes(*paths):
    total = 0
    for path in paths:
        if os.path.isfile(path):
            total += os.path.getsize(path)
            continue
        for root, _, files in os.walk(path):
            for f in files:
                try:
                    total += os.lstat(os.path.join(root, f)).st_size
                except FileNotFoundError:
                    pass
    return total


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def make_base_tar(path, size_mib):
    candidates = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/jvm", "/usr/lib/llvm-14", "/usr/lib/gcc", "/usr/share", "/usr/bin", "/usr/lib"]
    chosen, total = [], 0
    for c in candidates:
        if not os.path.isdir(c) or any(c.startswith(x + "/") or x.startswith(c + "/") for x in chosen):
            continue
        chosen.append(c)
        total += int(subprocess.run(["du", "-sb", c], capture_output=True, text=True).stdout.split()[0])
        if total >= size_mib << 20:
            break
    subprocess.run(["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner",
                    "-cf", path] + chosen, check=True, stderr=subprocess.DEVNULL)
    size = os.path.getsize(path)
    if size < size_mib << 20:
        sys.exit(f"only {size >> 20} MiB of files found under {chosen}; need {size_mib} MiB")
    return chosen


def edit(data, rng):
    """Eight 64 KiB overwrites at random places and one 100-byte insertion: ~0.5 MB."""
    for _ in range(8):
        at = rng.randrange(0, len(data) - 65536)
        data[at:at + 65536] = rng.randbytes(65536)
    at = rng.randrange(0, len(data))
    data[at:at] = rng.randbytes(100)


class Tool:
    def __init__(self, name, work):
        self.name = name
        self.work = os.path.join(work, name)
        os.makedirs(self.work)
        self.ingests = []  # (wall, cpu)
        self.stored = []   # bytes after each version
        self.restore = None

    def record(self, wall, cpu):
        self.ingests.append((wall, cpu))
        self.stored.append(self.stored_bytes())


class Kbuild(Tool):
    def __init__(self, work, binary):
        super().__init__("kbuild", work)
        self.binary = binary
        self.data = os.path.join(self.work, "data")
        self.kids = []

    def ingest(self, path, i):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        out = subprocess.run([self.binary, "keg", "put", path, "--data-dir", self.data], check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.kids.append(out.stdout.strip())
        self.record(wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))

    def stored_bytes(self):
        return apparent_bytes(os.path.join(self.data, "keg", "objects"), os.path.join(self.data, "keg", "packs"), os.path.join(self.data, "refs.sqlite"))

    def restore_last(self, dest):
        return run_timed([self.binary, "keg", "get", self.kids[-1], dest, "--data-dir", self.data])


class Casync(Tool):
    def __init__(self, work):
        super().__init__("casync", work)
        self.store = os.path.join(self.work, "store.castr")
        self.indexes = []

    def ingest(self, path, i):
        index = os.path.join(self.work, f"v{i:03}.caibx")
        self.indexes.append(index)
        self.record(*run_timed(["casync", "make", "--store", self.store, index, path]))

    def stored_bytes(self):
        return apparent_bytes(self.store, *self.indexes)

    def restore_last(self, dest):
        return run_timed(["casync", "extract", "--store", self.store, self.indexes[-1], dest])


class Restic(Tool):
    def __init__(self, work):
        super().__init__("restic", work)
        self.repo = os.path.join(self.work, "repo")
        self.env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=os.path.join(self.work, "cache"))
        subprocess.run(["restic", "-r", self.repo, "init"], check=True, env=self.env, capture_output=True)
        self.source = None

    def ingest(self, path, i):
        self.source = path
        self.record(*run_timed(["restic", "-r", self.repo, "backup", "--quiet", "--host", "bench", path], env=self.env))

    def stored_bytes(self):
        return apparent_bytes(self.repo)

    def restore_last(self, dest):
        target = dest + ".d"
        wall, cpu = run_timed(["restic", "-r", self.repo, "restore", "latest", "--target", target], env=self.env)
        os.rename(os.path.join(target, self.source.lstrip("/")), dest)
        return wall, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--versions", type=int, default=64)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--kbuild", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "kbuild"))
    ap.add_argument("--work", default=None, help="scratch directory (default: a new one under /var/tmp)")
    ap.add_argument("--tools", default="kbuild,casync,restic")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    work = args.work or tempfile.mkdtemp(prefix="keg-bench-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    try:
        base = os.path.join(work, "base.tar")
        chosen = make_base_tar(base, args.size_mib)
        with open(base, "rb") as f:
            data = bytearray(f.read())
        os.unlink(base)
        print(f"data: tar of {', '.join(chosen)}: {len(data) / MB:.0f} MB; {args.versions} versions, ~0.5 MB changed each", flush=True)

        tools = []
        for name in args.tools.split(","):
            tools.append({"kbuild": lambda: Kbuild(work, os.path.abspath(args.kbuild)), "casync": lambda: Casync(work), "restic": lambda: Restic(work)}[name]())

        rng = random.Random(args.seed)
        current = os.path.join(work, "current.tar")
        sizes = []
        for i in range(args.versions):
            if i > 0:
                edit(data, rng)
            with open(current, "wb") as f:
                f.write(data)
            sizes.append(len(data))
            for t in tools:
                t.ingest(current, i)
            if i % 8 == 0 or i == args.versions - 1:
                line = "  ".join(f"{t.name} {sizes[-1] / MB / t.ingests[-1][0]:6.0f} MB/s" for t in tools)
                print(f"version {i + 1:3}/{args.versions}: {line}", flush=True)

        want = sha256_file(current)
        for t in tools:
            dest = os.path.join(work, f"restored-{t.name}.tar")
            subprocess.run(["sync"])
            wall, cpu = t.restore_last(dest)
            got = sha256_file(dest)
            if got != want:
                sys.exit(f"{t.name}: restored bytes differ (sha256 {got} != {want})")
            t.restore = (wall, cpu)
            os.unlink(dest)

        rows = {}
        print()
        print(f"{'tool':8} {'first MB/s':>11} {'later MB/s':>11} {'later MB/cpu-s':>15} {'restore MB/s':>13} {'bytes/extra version':>20} {'total stored':>13}")
        for t in tools:
            first = sizes[0] / MB / t.ingests[0][0]
            later_wall = statistics.median(sizes[i] / MB / t.ingests[i][0] for i in range(1, len(sizes))) if len(sizes) > 1 else float("nan")
            later_cpu = statistics.median(sizes[i] / MB / max(t.ingests[i][1], 1e-9) for i in range(1, len(sizes))) if len(sizes) > 1 else float("nan")
            restore = sizes[-1] / MB / t.restore[0]
            per_version = (t.stored[-1] - t.stored[0]) / max(len(sizes) - 1, 1)
            rows[t.name] = (first, later_wall, later_cpu, restore, per_version)
            print(f"{t.name:8} {first:11.0f} {later_wall:11.0f} {later_cpu:15.0f} {restore:13.0f} {per_version:20.0f} {t.stored[-1] / MB:10.1f} MB")
        if "kbuild" in rows and "casync" in rows:
            k, c = rows["kbuild"], rows["casync"]
            print()
            print("ratios (kbuild / casync):")
            print(f"  bytes per extra version: {k[4] / c[4]:.2f}x   (target <= 1.0)")
            print(f"  first ingest speed:      {k[0] / c[0]:.2f}x   (target >= 3)")
            print(f"  later ingest speed:      {k[1] / c[1]:.2f}x   (target >= 3)")
            print(f"  restore speed:           {k[3] / c[3]:.2f}x")
        if "kbuild" in rows and "restic" in rows:
            k, r = rows["kbuild"], rows["restic"]
            print("ratios (kbuild / restic):")
            print(f"  bytes per extra version: {k[4] / r[4]:.2f}x")
            print(f"  later ingest speed:      {k[1] / r[1]:.2f}x")
            print(f"  restore speed:           {k[3] / r[3]:.2f}x")
        if "kbuild" in rows:
            k = rows["kbuild"]
            print(f"kbuild later ingest per core: {k[2] / 1000:.2f} GB per CPU-second (target >= 1); restore {k[3] / 1000:.2f} GB/s (target >= 1)")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
