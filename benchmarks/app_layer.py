#!/usr/bin/env python3
"""Making an image layer from a directory: kbuild against `umoci insert`, the
same directory, the same run.

kbuild: `kbuild stack import DIR` (what the build worker does with a build's
output: Keg put of the directory, the reproducible layer tar made from the
tree, config and manifest), each round into a fresh data dir (nothing to
deduplicate against). umoci: `umoci insert` of the same directory into a fresh
copy of a minimal OCI layout (it writes a gzip layer, config and manifest).
Prints seconds per round, the medians and the ratio (umoci / kbuild: how many
times faster kbuild is).

Usage: python3 benchmarks/app_layer.py [--dir /usr/lib/python3.11] [--rounds 5]
Needs a release build (swift build -c release --product kbuild) and umoci.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KBUILD = os.path.join(ROOT, ".build/release/kbuild")


def run(args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {r.stderr}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/usr/lib/python3.11")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if not os.path.exists(KBUILD):
        sys.exit("build first: swift build -c release --product kbuild")
    files = sum(len(fs) for _, _, fs in os.walk(args.dir))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.dir) for f in fs
               if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f)))
    base = tempfile.mkdtemp(prefix="kbuild-layer-bench-")
    try:
        empty = os.path.join(base, "empty-layout")
        run(["umoci", "init", "--layout", empty])
        run(["umoci", "new", "--image", empty + ":app"])
        kb, um = [], []
        print(f"directory {args.dir}: {files} files, {size / 1e6:.0f} MB; {args.rounds} rounds, alternating")
        for r in range(args.rounds):
            data = os.path.join(base, f"kbuild-{r}")
            t = time.perf_counter()
            run([KBUILD, "stack", "import", args.dir, "app", "--data-dir", data])
            kb.append(time.perf_counter() - t)
            layout = os.path.join(base, f"umoci-{r}")
            shutil.copytree(empty, layout)
            t = time.perf_counter()
            run(["umoci", "insert", "--image", layout + ":app", args.dir, "/app"])
            um.append(time.perf_counter() - t)
            print(f"round {r}: kbuild {kb[-1]:6.2f} s   umoci insert {um[-1]:6.2f} s")
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(layout, ignore_errors=True)
        print(f"medians: kbuild {statistics.median(kb):.2f} s, umoci insert {statistics.median(um):.2f} s; "
              f"ratio umoci/kbuild {statistics.median(um) / statistics.median(kb):.2f} (target >= 2)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
