#!/usr/bin/env python3
"""A deploy under constant load through the router: a rolling deploy (kbuild's
default: one new process at a time, health-gated, old ones drained before they
stop) against stop-then-start (--max-surge 0 --max-unavailable N), in the same
harness and the same run. hey sends a fixed rate (default 600 requests/s for
25 s) at APP.localhost through the router while a new commit is pushed.

Prints, for each mode: requests, failed requests (non-200 answers and
connection errors), the rate reached, and the time from `git push` to all
traffic on the new version (every answer carries the new version, and no
process of the old one runs). Target: rolling 0 failed of >= 10,000; the
negative control must show failures.

Usage: python3 benchmarks/rolling_deploy.py [--rate 600] [--seconds 25] [--web 2]
Needs: a release build (swift build -c release --product kbuild --product kbuild-sandbox), git, hey (Debian: hey).
"""
import argparse, json, os, re, shutil, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KBUILD = os.path.join(ROOT, ".build/release/kbuild")
ENV = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="bench@example.com",
           GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="bench@example.com")
ENV.pop("KBUILD_DATA_DIR", None)


def run(args, check=True, **kw):
    r = subprocess.run(args, capture_output=True, text=True, env=ENV, **kw)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(port, path="/version.txt", host="bench.localhost"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status, r.read().decode()
    except Exception as e:
        return 0, str(e)


def start_up(data, api_port, router_port, extra):
    up = subprocess.Popen([KBUILD, "up", "--data-dir", data, "--port", str(api_port), "--router-port", str(router_port), *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    for line in up.stdout:
        if line.startswith("router"):
            break
    threading.Thread(target=lambda: [None for _ in up.stdout], daemon=True).start()
    return up


def stop_up(up):
    up.terminate()
    up.wait(timeout=30)


def deploy_under_load(mode, work, data, router_port, version, a):
    kb = lambda *args: run([KBUILD, *args, "--data-dir", data])
    with open(os.path.join(work, "www/version.txt"), "w") as f:
        f.write(f"{version}\n")
    run(["git", "commit", "-q", "-am", f"version {version}"], cwd=work)
    workers = 20
    hey = subprocess.Popen(["hey", "-z", f"{a.seconds}s", "-c", str(workers), "-q", str(a.rate / workers), "-t", "5",
                            "-host", "bench.localhost", *(["-disable-keepalive"] if a.no_keepalive else []),
                            f"http://127.0.0.1:{router_port}/version.txt"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(a.seconds * 0.2)
    t0 = time.perf_counter()
    push = run(["git", "push", "kbuild", "main"], cwd=work)
    # All traffic on the new version: every process runs the new release, nothing older runs, and answers say so.
    switched = None
    while time.perf_counter() - t0 < 120:
        ps = json.loads(kb("ps", "bench", "--json").stdout)
        newest = max((p.get("release") or 0) for p in ps) if ps else 0
        if ps and all(p.get("release") == newest and p["state"] == "healthy" for p in ps) and len(ps) == a.web:
            if all(get(router_port)[1].strip() == version for _ in range(10)):
                switched = time.perf_counter() - t0
                break
        time.sleep(0.05)
    out, _ = hey.communicate()
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    err_lines = [l.strip() for l in out.split("Error distribution:")[1].strip().split("\n")] if "Error distribution:" in out else []
    errors = sum(int(re.match(r"\[(\d+)\]", l).group(1)) for l in err_lines if re.match(r"\[(\d+)\]", l))
    total = sum(codes.values()) + errors
    failed = total - codes.get(200, 0)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"mode": mode, "requests": total, "failed": failed, "rps": float(rps.group(1)) if rps else 0.0,
            "push_to_all_traffic_s": switched, "codes": codes, "errors": err_lines[:5],
            "push_output": [l for l in push.stderr.splitlines() if "-----> v" in l or " !" in l]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=600)
    ap.add_argument("--seconds", type=int, default=25)
    ap.add_argument("--web", type=int, default=2)
    ap.add_argument("--no-keepalive", action="store_true", help="a new connection per request")
    a = ap.parse_args()
    if not os.access(KBUILD, os.X_OK):
        sys.exit(f"no release build at {KBUILD}: swift build -c release --product kbuild && swift build -c release --product kbuild-sandbox")
    if not shutil.which("hey"):
        run(["apt-get", "install", "-y", "hey"])
    tmp = tempfile.mkdtemp(prefix="kbuild-bench-roll-")
    os.chmod(tmp, 0o700)
    data = os.path.join(tmp, "data")
    kb = lambda *args: run([KBUILD, *args, "--data-dir", data])
    kb("stack", "create", "busybox")
    kb("apps:create", "bench", "--stack", "busybox")
    work = os.path.join(tmp, "work")
    os.makedirs(os.path.join(work, "www"))
    with open(os.path.join(work, "Procfile"), "w") as f:
        f.write('web: exec busybox httpd -f -p "0.0.0.0:$PORT" -h www\n')
    with open(os.path.join(work, "www/version.txt"), "w") as f:
        f.write("v0\n")
    run(["git", "init", "-q", "-b", "main"], cwd=work)
    run(["git", "add", "-A"], cwd=work)
    run(["git", "commit", "-q", "-m", "first"], cwd=work)
    api_port, router_port = free_port(), free_port()
    results = []
    try:
        for mode, extra in [("rolling", []), ("stop-then-start", ["--max-surge", "0", "--max-unavailable", str(a.web)])]:
            up = start_up(data, api_port, router_port, extra)
            try:
                if mode == "rolling":
                    run([KBUILD, "git:remote", "bench", "--data-dir", data], cwd=work)
                    run(["git", "push", "kbuild", "main"], cwd=work)
                    kb("ps:scale", "bench", f"web={a.web}")
                deadline = time.time() + 60
                while time.time() < deadline:
                    ps = json.loads(kb("ps", "bench", "--json").stdout)
                    if len(ps) == a.web and all(p["state"] == "healthy" for p in ps) and get(router_port)[0] == 200:
                        break
                    time.sleep(0.2)
                r = deploy_under_load(mode, work, data, router_port, f"{mode}-{time.time()}", a)
                results.append(r)
            finally:
                stop_up(up)
    finally:
        run([KBUILD, "down", "--grace", "2", "--data-dir", data], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        took = f"{r['push_to_all_traffic_s']:.2f} s" if r["push_to_all_traffic_s"] is not None else "never"
        print(f"{r['mode']:16s} requests {r['requests']:6d}  failed {r['failed']:5d}  {r['rps']:7.1f} req/s  push to all traffic on the new version: {took}")
        for line in r["push_output"]:
            print(f"{'':16s} {line.strip()}")
        for e in r["errors"]:
            print(f"{'':16s} error: {e}")
    rolling, control = results[0], results[1]
    ok = rolling["failed"] == 0 and rolling["requests"] >= 10_000 and control["failed"] > 0
    print(f"target: rolling 0 failed of >= 10,000 ({'met' if rolling['failed'] == 0 and rolling['requests'] >= 10_000 else 'NOT met'}); "
          f"stop-then-start shows failures ({'yes' if control['failed'] > 0 else 'NO'})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
