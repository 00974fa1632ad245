#!/usr/bin/env python3
"""Python dependencies: kbuild's builds against plain pip, in the same run.

The Flask + gunicorn example (examples/flask), on the Debian stack:

  (a) a cold build (a new app, an empty build cache, requirements never
      installed before) against `python3 -m venv` + `pip install -r
      requirements.txt` run plainly in the same build image (a sandbox on the
      host's network, nothing else: no layers, no cache), same index (PyPI);
      target: ratio <= 1.5x;
  (b) a code-only change pushed to the running app: from `git push` to every
      answer of the router coming from the new version; target <= 2 s, with
      0 packages installed;
  (c) a second app with the same requirements: its image has the first
      app's dependency layer (same KID; here the same tree, so the whole build
      is memoised), 0 packages installed.

Medians of --runs runs. The stack is made once (about 2 minutes) unless --data
names a data dir that has it (`kbuild stack create debian`).

Usage: python3 benchmarks/python_deps.py [--bin .build/release/kbuild] [--runs 3] [--data DIR]
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, time, urllib.error, urllib.request, shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="bench@example.com",
           GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="bench@example.com")
ENV.pop("KBUILD_DATA_DIR", None)


def run(args, check=True, **kw):
    r = subprocess.run(args, capture_output=True, text=True, env=ENV, **kw)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def _kb(binary, env, args, check):
    r = subprocess.run([binary, *args], capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        sys.exit(f"kbuild {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def routed(port, host):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}: {e.read().decode(errors='replace')[:200]}"
    except Exception as e:
        return f"{e!r}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build/release/kbuild"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", help="a data dir with the debian stack (default: a new one, the stack made in it)")
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"no kbuild at {a.bin}: swift build -c release --product kbuild && swift build -c release --product kbuild-sandbox")
    tmp = tempfile.mkdtemp(prefix="kbuild-bench-pydeps-")
    data = a.data or os.path.join(tmp, "data")
    kenv = dict(ENV, KBUILD_DATA_DIR=data)
    kb = lambda *args, check=True: _kb(a.bin, kenv, args, check)
    if "debian-13 " not in kb("stack", "ls").stdout.replace("\t", " "):
        print("making the debian stack (once)...", flush=True)
        kb("stack", "create", "debian")
    router = 18000 + os.getpid() % 1000
    up = subprocess.Popen([a.bin, "up", "--port", "0", "--router-port", str(router), "--data-dir", data],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        while True:
            line = up.stdout.readline()
            if not line:
                sys.exit("kbuild up ended")
            if line.startswith("router "):
                break
        requirements = open(os.path.join(ROOT, "examples/flask/requirements.txt")).read()
        tag = str(os.getpid())
        plain, cold, cold_push, code, pushed, shared = [], [], [], [], [], []
        same_layer = installs_b = installs_c = 0
        for i in range(a.runs):
            # Requirements no earlier run installed (a comment makes them a new input), so both arms start cold.
            reqs = requirements + f"# run {tag}-{i}\n"
            req_file = os.path.join(tmp, f"requirements-{i}.txt")
            open(req_file, "w").write(reqs)
            t = time.perf_counter()
            mounts = ["--mount", f"{req_file}:/req.txt:ro"]
            for f in ["/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt"]:
                if os.path.exists(f):
                    mounts += ["--mount", f"{f}:{f}:ro"]
            kb("sandbox", "run", "--stack", "debian-13-build", "--network", "host", "--memory", "2G", "--timeout", "15m", *mounts, "--",
               "sh", "-c", "python3 -m venv /tmp/v && /tmp/v/bin/pip install -q --no-cache-dir --no-compile -r /req.txt")
            plain.append(time.perf_counter() - t)

            app = f"bench{i}-{tag}"[:30]
            work = os.path.join(tmp, app)
            shutil.copytree(os.path.join(ROOT, "examples/flask"), work)
            open(os.path.join(work, "requirements.txt"), "w").write(reqs)
            kb("apps:create", app)
            run(["git", "init", "-q", "-b", "main"], cwd=work)
            run(["git", "add", "-A"], cwd=work)
            run(["git", "commit", "-q", "-m", "flask"], cwd=work)
            run([a.bin, "git:remote", app, "--data-dir", data], cwd=work)
            t = time.perf_counter()
            push = run(["git", "push", "kbuild", "main"], cwd=work)
            cold_push.append(time.perf_counter() - t)
            m = re.search(r"Build K-\w+ succeeded in ([0-9.]+) s", push.stderr)
            cold.append(float(m.group(1)) if m else float("nan"))
            layer = re.search(r"Layer (K-\w+)", push.stderr).group(1)

            # (b) a code-only change: push until every answer is the new version's.
            text = open(os.path.join(work, "app.py")).read().replace("hello from flask", f"hello again {i}")
            open(os.path.join(work, "app.py"), "w").write(text)
            run(["git", "commit", "-q", "-am", "code"], cwd=work)
            t = time.perf_counter()
            push = run(["git", "push", "kbuild", "main"], cwd=work)
            pushed.append(time.perf_counter() - t)
            installs_b += push.stderr.count("Successfully installed")
            streak = 0
            while streak < 10 and time.perf_counter() - t < 60:
                streak = streak + 1 if routed(router, f"{app}.localhost").startswith(f"hello again {i}") else 0
                time.sleep(0.005)
            code.append(time.perf_counter() - t)
            if streak < 10:
                print(f"  run {i}: the new version never answered; the router said {routed(router, f'{app}.localhost')[:200]!r}", flush=True)

            # (c) another app, the same requirements.
            other = app + "-b"
            owork = os.path.join(tmp, other)
            shutil.copytree(work, owork)
            shutil.rmtree(os.path.join(owork, ".git"))
            kb("apps:create", other)
            run(["git", "init", "-q", "-b", "main"], cwd=owork)
            run(["git", "add", "-A"], cwd=owork)
            run(["git", "commit", "-q", "-m", "flask"], cwd=owork)
            run([a.bin, "git:remote", other, "--data-dir", data], cwd=owork)
            t = time.perf_counter()
            push = run(["git", "push", "kbuild", "main"], cwd=owork)
            shared.append(time.perf_counter() - t)
            installs_c += push.stderr.count("Successfully installed")
            # The other app's image has the first app's dependency layer (reused, or the whole build memoised).
            image = json.loads(kb("image", "ls", other, "--json").stdout)[0]["image"]
            manifest = json.loads(kb("keg", "cat", image).stdout)
            same_layer += 1 if any(l["digest"].startswith("sha256:" + layer[2:]) for l in manifest["layers"]) else 0
            kb("apps:destroy", app, "--confirm", app, check=False)
            kb("apps:destroy", other, "--confirm", other, check=False)

        med = statistics.median
        print(f"python dependencies, examples/flask on debian-13, medians of {a.runs} runs (seconds)")
        print(f"  (a) plain venv + pip install -r, build image  {med(plain):7.2f}")
        print(f"      kbuild cold build (the build step)        {med(cold):7.2f}   ratio {med(cold) / med(plain):.2f}x (target <= 1.5x)")
        print(f"      kbuild cold push to live                  {med(cold_push):7.2f}")
        print(f"  (b) code-only change: push to all traffic new {med(code):7.2f}   (target <= 2 s; packages installed: {installs_b})")
        print(f"      of which git push itself (build, release, the push's wait for 'live') {med(pushed):7.2f}")
        print(f"  (c) second app, same requirements: push       {med(shared):7.2f}   same layer KID {same_layer}/{a.runs}; packages installed: {installs_c}")
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait()
        subprocess.run([a.bin, "down", "--grace", "1", "--data-dir", data], capture_output=True)
        if not a.data:
            subprocess.run(["rm", "-rf", tmp])
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
