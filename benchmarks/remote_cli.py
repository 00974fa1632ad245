#!/usr/bin/env python3
"""The CLI from another machine against the CLI on the control plane, the same
store, the same run.

trace-bench makes a data dir of 200 apps (a release each) and 1,000 process
records reported by one node. `kbuild up` serves it on the host end of a veth
pair; the remote CLI runs in a network namespace of its own behind that pair,
with only KBUILD_URL and KBUILD_TOKEN (no data dir, an empty HOME). The local
CLI reads the same data dir in-process (`--data-dir`). Both are timed end to
end (process start included), alternating, for `kbuild apps`, `kbuild ps --all`
and `kbuild trace APP`. Prints p50 and p99 of each side and the remote/local
ratios; targets: ratio <= 1.5 at p50 and p99 <= 100 ms remotely.

What differs, said plainly: the server is warm (its record cache is filled
by the first, unmeasured run) while each local run starts cold, which is
what a long-running control plane gives a remote user; the remote `apps`
does more than the local one (each app's release, rollout and domains, not
only its record); the veth pair adds no real network latency; and with 30
runs p99 is the slowest run.

Usage: python3 benchmarks/remote_cli.py [--apps 200] [--processes 1000] [--runs 40]
Needs root (a network namespace) and builds the release binaries first.
"""
import argparse, os, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KBUILD = os.path.join(ROOT, ".build/release/kbuild")
BENCH = os.path.join(ROOT, ".build/release/trace-bench")
NS, HOST_IF, NS_IF = "kbrcli-bench", "kbrcli-h", "kbrcli-n"
HOST_IP, NS_IP = "10.254.77.1", "10.254.77.2"


def sh(*args, check=True, **kw):
    r = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {r.stderr or r.stdout}")
    return r


def cleanup_network():
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)


def timed(argv, env, expect, runs_out):
    t = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = (time.perf_counter() - t) * 1000
    if r.returncode != 0 or expect not in r.stdout:
        sys.exit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr[-500:]} {r.stdout[-300:]}")
    runs_out.append(elapsed)


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", type=int, default=200)
    ap.add_argument("--processes", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    if args.apps < 2:
        sys.exit("--apps: at least 2")
    # A SIGTERM runs the cleanup below, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    sh("swift", "build", "-c", "release", "--product", "kbuild", cwd=ROOT)
    sh("swift", "build", "-c", "release", "--product", "trace-bench", cwd=ROOT)
    base = tempfile.mkdtemp(prefix="kbuild-remote-cli-")
    data, home = os.path.join(base, "data"), os.path.join(base, "home")
    os.makedirs(home)
    up = None
    cleanup_network()
    try:
        print(f"making {args.apps} apps and {args.processes} processes ...", flush=True)
        sh(BENCH, KBUILD, data, "--apps", str(args.apps), "--releases", str(args.apps), "--processes", str(args.processes), "--setup-only")
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        sh("ip", "link", "set", NS_IF, "netns", NS)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/30", "dev", NS_IF)
        sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        up = subprocess.Popen([KBUILD, "up", "--data-dir", data, "--host", HOST_IP, "--port", "0", "--router-port", "0", "--nodes", "0"],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(base, "up.log"), "w"))
        deadline = time.time() + 60
        while time.time() < deadline and not os.path.exists(os.path.join(data, "server.url")):
            if up.poll() is not None:
                sys.exit(f"kbuild up exited ({up.returncode}): {open(os.path.join(base, 'up.log')).read()[-1000:]}")
            time.sleep(0.1)
        url = open(os.path.join(data, "server.url")).read().strip()
        token = open(os.path.join(data, "admin.token")).read().strip()
        local_env = {k: v for k, v in os.environ.items() if not k.startswith("KBUILD_")}
        remote_env = dict(local_env, HOME=home, XDG_CONFIG_HOME="", KBUILD_URL=url, KBUILD_TOKEN=token)
        app = f"app{min(7, args.apps - 1)}"
        commands = [("apps", ["apps"], f"app{args.apps - 1}  "),
                    ("ps --all", ["ps", "--all"], f"{app}.web."),
                    (f"trace {app}", ["trace", app], "commit")]
        print(f"server {url}; remote CLI in netns {NS}; {args.runs} runs each, alternating")
        results = []
        for label, argv, expect in commands:
            local, remote = [], []
            # One of each first, unmeasured (page cache, connection setup).
            timed([KBUILD] + argv + ["--data-dir", data], local_env, expect, [])
            timed(["ip", "netns", "exec", NS, KBUILD] + argv, remote_env, expect, [])
            for _ in range(args.runs):
                timed([KBUILD] + argv + ["--data-dir", data], local_env, expect, local)
                timed(["ip", "netns", "exec", NS, KBUILD] + argv, remote_env, expect, remote)
            lp50, lp99, rp50, rp99 = statistics.median(local), pct(local, 0.99), statistics.median(remote), pct(remote, 0.99)
            results.append((label, lp50, lp99, rp50, rp99))
            print(f"{label:12} local p50 {lp50:6.1f} ms p99 {lp99:6.1f} ms | remote p50 {rp50:6.1f} ms p99 {rp99:6.1f} ms | "
                  f"ratio p50 {rp50 / lp50:.2f} p99 {rp99 / lp99:.2f}", flush=True)
        ok = all(r[3] / r[1] <= 1.5 and r[4] <= 100 for r in results)
        print("targets (remote/local p50 <= 1.5, remote p99 <= 100 ms):", "met" if ok else "NOT met")
    finally:
        if up:
            up.terminate()
            try:
                up.wait(timeout=15)
            except subprocess.TimeoutExpired:
                up.kill()
        subprocess.run([KBUILD, "down", "--grace", "1", "--data-dir", data], capture_output=True)
        cleanup_network()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
