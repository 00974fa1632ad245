#!/usr/bin/env python3
"""kbuild logs APP --since 1h over a large store, against GNU sort -m (merging
the same time-ordered files) in the same run: the API's streaming k-way merge
of every process's log file, read through `kbuild logs` to /dev/null.

Writes N log files in the node agent's format (the sandbox helper's: one line
"TIME o|e text" each, in time order, interleaved across files) for an app, then
times each side `--rounds` times and prints medians, MB/s and the ratio.
Target (issue 6): at least 100 MB/s.

Usage: python3 benchmarks/logs_stream.py [--mib 1024] [--files 100] [--rounds 3]
Needs: a release build (swift build -c release --product kbuild --product kbuild-sandbox).
"""
import argparse, os, random, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KBUILD = os.path.join(ROOT, ".build/release/kbuild")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if not os.access(KBUILD, os.X_OK):
        sys.exit(f"no release build at {KBUILD}")
    tmp = tempfile.mkdtemp(prefix="kbuild-bench-logs-")
    os.chmod(tmp, 0o700)
    data = os.path.join(tmp, "data")
    env = dict(os.environ)
    env.pop("KBUILD_DATA_DIR", None)
    run = lambda *args: subprocess.run([KBUILD, *args, "--data-dir", data], check=True, capture_output=True, env=env)
    run("stack", "create", "busybox")
    run("apps:create", "bench", "--stack", "busybox")
    logs = os.path.join(data, "nodes", "local", "logs")
    os.makedirs(logs)
    # Lines of about 120 bytes, times increasing, spread over the files.
    per_file = a.mib * (1 << 20) // a.files
    start = time.time() - 1800
    t = start
    handles = [open(os.path.join(logs, f"bench.web.{i + 1}-0000abcd.log"), "w") for i in range(a.files)]
    sizes = [0] * a.files
    text = "GET /some/path/of/an/app?with=query 200 in 1.2 ms from 10.0.0.1 user-agent curl/7.88 " + "x" * 20
    n = 0
    print(f"writing {a.mib} MiB of logs in {a.files} files", flush=True)
    while min(sizes) < per_file:
        i = n % a.files
        n += 1
        t += 0.00001
        secs = int(t)
        line = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{int((t - secs) * 1e6):06d}Z {'e' if n % 7 == 0 else 'o'} {text} {n}\n"
        handles[i].write(line)
        sizes[i] += len(line)
    for h in handles:
        h.close()
    total = sum(sizes)
    up = subprocess.Popen([KBUILD, "up", "--data-dir", data, "--port", "0", "--router-port", "0", "--nodes", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        for line in up.stdout:
            if line.startswith("router"):
                break
        kb, sortm = [], []
        files = [os.path.join(logs, f) for f in sorted(os.listdir(logs))]
        for r in range(a.rounds):
            t0 = time.perf_counter()
            p = subprocess.run([KBUILD, "logs", "bench", "--since", "1h", "--data-dir", data], stdout=subprocess.PIPE, env=env)
            kb.append(time.perf_counter() - t0)
            lines = p.stdout.count(b"\n")
            if p.returncode != 0 or lines != n:
                sys.exit(f"kbuild logs gave {lines} lines of {n} (exit {p.returncode})")
            t0 = time.perf_counter()
            subprocess.run(["sort", "-m", "-k1,1", *files], stdout=subprocess.DEVNULL, env=dict(env, LC_ALL="C"), check=True)
            sortm.append(time.perf_counter() - t0)
            print(f"round {r + 1}: kbuild logs {kb[-1]:.2f} s ({lines} lines), sort -m {sortm[-1]:.2f} s", flush=True)
        mk, ms = statistics.median(kb), statistics.median(sortm)
        print(f"median kbuild logs --since 1h: {mk:.2f} s = {total / mk / 1e6:.0f} MB/s; sort -m: {ms:.2f} s = {total / ms / 1e6:.0f} MB/s")
        print(f"kbuild/sort -m throughput: {ms / mk:.2f}x; target >= 100 MB/s: {'met' if total / mk / 1e6 >= 100 else 'NOT met'}")
    finally:
        up.terminate()
        up.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
