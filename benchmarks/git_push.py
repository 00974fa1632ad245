#!/usr/bin/env python3
"""git push of the python example to a running kbuild, against a plain
`git push` of the same commits to a bare repository with no hook, in the same run.

Three kinds of push to kbuild: the cold first build; a memoised re-push (a new
commit of the same tree: nothing runs, only the source record and the image's
config are made); and a one-line change (a real build). Each round makes the
commit once and pushes it to both remotes, alternating which goes first.
Prints every push, the medians, and the target check:
memoised re-push <= 1.5 x plain push + 1 s.

Usage: python3 benchmarks/git_push.py [--rounds 7] [--data DIR]
--data: a data dir that already has the debian stack (else one is made, ~40 s).
Needs: a release build (swift build -c release --product kbuild --product kbuild-sandbox), git.
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KBUILD = os.path.join(ROOT, ".build/release/kbuild")
ENV = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="bench@example.com",
           GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="bench@example.com")


def run(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, env=ENV, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def timed(args, cwd):
    t = time.perf_counter()
    r = run(args, cwd=cwd)
    return time.perf_counter() - t, r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--data")
    a = ap.parse_args()
    if not os.access(KBUILD, os.X_OK):
        sys.exit(f"no release build at {KBUILD}: swift build -c release --product kbuild && swift build -c release --product kbuild-sandbox")
    tmp = tempfile.mkdtemp(prefix="kbuild-bench-push-")
    os.chmod(tmp, 0o700)
    data = a.data or os.path.join(tmp, "data")
    kb = lambda *args: run([KBUILD, *args, "--data-dir", data])
    if "debian" not in kb("stack", "ls").stdout:
        print("making the debian stack (debootstrap, about 40 s)", flush=True)
        kb("stack", "create", "debian")
    app = f"bench{os.getpid()}"
    kb("apps:create", app)
    # No node agent: this measures the push and build path (the rollout has its own benchmark, rolling_deploy.py).
    up = subprocess.Popen([KBUILD, "up", "--port", "0", "--router-port", "0", "--nodes", "0", "--data-dir", data], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        url = None
        for line in up.stdout:
            m = re.search(r"git\s+(http://[0-9.:]+)/APP\.git", line)
            if m:
                url = m.group(1)
                break
        if not url:
            sys.exit("kbuild up did not start")
        work = os.path.join(tmp, "work")
        shutil.copytree(os.path.join(ROOT, "examples/python"), work)
        with open(os.path.join(work, "bench-id.txt"), "w") as f:  # a tree no earlier run built
            f.write(f"{app} {time.time()}\n")
        run(["git", "init", "-q", "-b", "main"], cwd=work)
        run(["git", "add", "-A"], cwd=work)
        run(["git", "commit", "-q", "-m", "python example"], cwd=work)
        run([KBUILD, "git:remote", app, "--data-dir", data], cwd=work)
        plain = os.path.join(tmp, "plain.git")
        run(["git", "init", "-q", "--bare", plain])
        run(["git", "remote", "add", "plain", plain], cwd=work)

        cold, out = timed(["git", "push", "kbuild", "main"], work)
        assert "Python app detected" in out, out
        timed(["git", "push", "plain", "main"], work)
        print(f"cold build push: {cold:.2f} s")

        rows = {"plain": [], "memoised": [], "plain (change)": [], "one-line change": []}
        for i in range(a.rounds):
            run(["git", "commit", "-q", "--allow-empty", "-m", f"re-push {i}"], cwd=work)
            order = [("plain", "plain"), ("memoised", "kbuild")]
            for name, remote in (order if i % 2 == 0 else order[::-1]):
                t, out = timed(["git", "push", remote, "main"], work)
                if remote == "kbuild":
                    assert "memoised" in out and "Building on" not in out, out
                rows[name].append(t)
            with open(os.path.join(work, "app.py"), "a") as f:
                f.write(f"# change {i} of {app}\n")
            run(["git", "commit", "-q", "-am", f"change {i}"], cwd=work)
            order = [("plain (change)", "plain"), ("one-line change", "kbuild")]
            for name, remote in (order if i % 2 == 0 else order[::-1]):
                t, out = timed(["git", "push", remote, "main"], work)
                if remote == "kbuild":
                    assert "Python app detected" in out, out
                rows[name].append(t)
        print(f"{'push':<18} " + " ".join(f"{'r' + str(i + 1):>6}" for i in range(a.rounds)) + f" {'median':>8}")
        for name, times in rows.items():
            print(f"{name:<18} " + " ".join(f"{t:6.3f}" for t in times) + f" {statistics.median(times):8.3f}")
        p, m, c = (statistics.median(rows[k]) for k in ("plain", "memoised", "one-line change"))
        limit = 1.5 * p + 1.0
        print(f"memoised re-push / plain push: {m / p:.2f}x; target: memoised <= 1.5 x plain + 1 s = {limit:.3f} s: "
              f"{'met' if m <= limit else 'NOT met'} ({m:.3f} s)")
        print(f"one-line change (a real build) / plain push: {c / statistics.median(rows['plain (change)']):.1f}x")
    finally:
        up.terminate()
        up.wait()
        if not a.data:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
