#!/usr/bin/env python3
"""/healthz latency of a running kbuild while 20 pushes are abandoned mid-build,
against the same server with nothing going on, in the same run.

Each of 20 apps has a slow in-tree buildpack (compile sleeps 120 s); all 20 are
pushed at once, and once every push shows its build compiling, each git client
(with its remote helper) is killed. Meanwhile and after, /healthz is asked
every 20 ms until no `git http-backend`, `receive-pack` or hook of the data dir
is left. Prints p50 and p99 of both phases, their ratio, and how long the
server took to end every abandoned push. Target: every /healthz within 1 s.

Usage: python3 benchmarks/abandoned_pushes.py [--bin .build/release/kbuild] [--samples 500]
"""
import argparse, os, signal, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="bench@example.com",
           GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="bench@example.com")
ENV.pop("KBUILD_DATA_DIR", None)


def run(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, env=ENV, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def health(url):
    t = time.perf_counter()
    with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
        r.read()
    return time.perf_counter() - t


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1)]


def push_processes(data):
    found = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")
        except OSError:
            continue
        if f"KBUILD_DATA_DIR={data}".encode() in env and (b"http-backend" in cmd or b"receive-pack" in cmd or b"hook pre-receive" in cmd):
            found += 1
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build/release/kbuild"))
    ap.add_argument("--samples", type=int, default=500)
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"no kbuild at {a.bin}: swift build -c release --product kbuild && swift build -c release --product kbuild-sandbox")
    tmp = tempfile.mkdtemp(prefix="kbuild-bench-abandon-")
    os.chmod(tmp, 0o700)
    data = os.path.join(tmp, "data")
    kb = lambda *args: run([a.bin, *args, "--data-dir", data])
    kb("stack", "create", "busybox")
    up = subprocess.Popen([a.bin, "up", "--port", "0", "--router-port", "0", "--data-dir", data], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        url = None
        while url is None:
            line = up.stdout.readline()
            if not line:
                sys.exit("kbuild up ended")
            if line.startswith("keg "):
                url = line.split()[1].replace("/v1/objects/", "")
        for _ in range(a.samples):
            health(url)  # warm
        quiet = []
        for _ in range(a.samples):
            quiet.append(health(url))
            time.sleep(0.005)

        pushes = []
        for i in range(20):
            app = f"slow{i}"
            work = os.path.join(tmp, app)
            os.makedirs(work + "/bp/bin")
            open(work + "/Procfile", "w").write("web: httpd -f -p $PORT\n")
            open(work + "/.buildpacks", "w").write("./bp\n")
            for name, text in [("detect", "#!/bin/sh\necho Slow\n"), ("compile", "#!/bin/sh\necho COMPILING\nsleep 120\n")]:
                path = f"{work}/bp/bin/{name}"
                open(path, "w").write(text)
                os.chmod(path, 0o755)
            kb("apps:create", app, "--stack", "busybox")
            run(["git", "init", "-q", "-b", "main"], cwd=work)
            run(["git", "add", "-A"], cwd=work)
            run(["git", "commit", "-q", "-m", "slow"], cwd=work)
            run([a.bin, "git:remote", app, "--data-dir", data], cwd=work)
            log = open(os.path.join(tmp, f"{app}.log"), "w")
            pushes.append((subprocess.Popen(["git", "push", "kbuild", "main"], cwd=work, stdout=log, stderr=log, env=ENV,
                                            start_new_session=True), os.path.join(tmp, f"{app}.log")))
        deadline = time.time() + 120
        while time.time() < deadline and not all("COMPILING" in open(path).read() for _, path in pushes):
            time.sleep(0.2)
        for p, _ in pushes:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        abandoned_at = time.perf_counter()
        busy, ended = [], None
        while len(busy) < a.samples or ended is None:
            busy.append(health(url))
            if ended is None and push_processes(data) == 0:
                ended = time.perf_counter() - abandoned_at
            if time.perf_counter() - abandoned_at > 120:
                break
            time.sleep(0.02)
        print(f"/healthz, {a.samples} samples each (seconds)")
        print(f"  quiet server            p50 {statistics.median(quiet) * 1000:7.2f} ms  p99 {pct(quiet, 99) * 1000:7.2f} ms  max {max(quiet) * 1000:7.2f} ms")
        print(f"  20 pushes abandoned     p50 {statistics.median(busy) * 1000:7.2f} ms  p99 {pct(busy, 99) * 1000:7.2f} ms  max {max(busy) * 1000:7.2f} ms")
        print(f"  ratio p99 abandoned/quiet {pct(busy, 99) / pct(quiet, 99):.2f}")
        print(f"  every abandoned push ended after {ended:.1f} s" if ended is not None else "  abandoned pushes still running after 120 s")
        print(f"  target: every /healthz within 1 s: {'met' if max(busy) < 1 else 'NOT met'}")
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait()
        subprocess.run([a.bin, "down", "--grace", "1", "--data-dir", data], capture_output=True)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
