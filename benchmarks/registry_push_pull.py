#!/usr/bin/env python3
"""skopeo push and pull of one image to and from kbuild's registry and Debian's
docker-registry, side by side in the same run.

The image: an OCI layout made by `kbuild stack import` + `stack export` of a
directory of random (incompressible) files, one uncompressed layer of --size-mib.
Each round starts both registries on fresh storage (so nothing is already
there), pushes with `skopeo copy --preserve-digests oci:… docker://…`, then
pulls into a fresh OCI layout. Prints MB/s per round, the medians, the ratios
(kbuild / docker-registry, higher is better) and checks that both registries
gave back the same manifest digest as the layout's.

Usage: python3 benchmarks/registry_push_pull.py [--size-mib 220] [--rounds 3]
Needs: a release build (swift build -c release --product kbuild), skopeo,
docker-registry (bash scripts/install-deps.sh --bench).
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KBUILD = os.path.join(ROOT, ".build/release/kbuild")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, auth=None, deadline=30):
    end = time.time() + deadline
    while time.time() < end:
        args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url] + (["-u", auth] if auth else [])
        code = subprocess.run(args, capture_output=True, text=True).stdout
        if code == "200":
            return
        time.sleep(0.05)
    sys.exit(f"no answer from {url}")


def run(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {r.stderr}")
    return r.stdout


def manifest_digest(layout):
    with open(os.path.join(layout, "index.json")) as f:
        return json.load(f)["manifests"][0]["digest"]


def start_kbuild(work):
    data = os.path.join(work, "kbuild-data")
    port = free_port()
    proc = subprocess.Popen([KBUILD, "up", "--port", str(port), "--router-port", "0", "--nodes", "0", "--data-dir", data], stdout=subprocess.DEVNULL)
    token = None
    for _ in range(600):
        try:
            token = open(os.path.join(data, "admin.token")).read().strip()
            break
        except OSError:
            time.sleep(0.05)
    wait_for(f"http://127.0.0.1:{port}/v2/", f"kbuild:{token}")
    return proc, port, ["--dest-creds", f"kbuild:{token}"], ["--src-creds", f"kbuild:{token}"]


def start_registry(work):
    port = free_port()
    storage = os.path.join(work, "registry-data")
    config = os.path.join(work, "registry.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n"
                f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(f"http://127.0.0.1:{port}/v2/")
    return proc, port, [], []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=220)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(KBUILD):
        sys.exit("build first: swift build -c release --product kbuild")
    base = tempfile.mkdtemp(prefix="kbuild-registry-bench-")
    try:
        rootfs = os.path.join(base, "rootfs")
        os.makedirs(rootfs)
        left = args.size_mib << 20
        i = 0
        while left > 0:
            n = min(left, 16 << 20)
            with open(os.path.join(rootfs, f"blob{i:03d}.bin"), "wb") as f:
                f.write(os.urandom(n))
            left -= n
            i += 1
        maker = os.path.join(base, "maker")
        run([KBUILD, "stack", "import", rootfs, "bench", "--data-dir", maker])
        layout = os.path.join(base, "layout")
        run([KBUILD, "stack", "export", "bench", layout, "--data-dir", maker])
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(layout, "blobs")) for f in fs)
        want = manifest_digest(layout)
        print(f"image: {size / 1e6:.0f} MB in one uncompressed layer, manifest {want[:19]}…, {args.rounds} rounds")

        results = {"kbuild": {"push": [], "pull": []}, "docker-registry": {"push": [], "pull": []}}
        for r in range(args.rounds):
            for name, start in (("kbuild", start_kbuild), ("docker-registry", start_registry)):
                work = os.path.join(base, f"{name}-{r}")
                os.makedirs(work)
                proc, port, dest, src = start(work)
                try:
                    ref = f"docker://127.0.0.1:{port}/bench/image:r{r}"
                    t = time.perf_counter()
                    run(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", *dest, f"oci:{layout}:bench", ref])
                    push = time.perf_counter() - t
                    out = os.path.join(work, "pulled")
                    t = time.perf_counter()
                    run(["skopeo", "copy", "--preserve-digests", "--src-tls-verify=false", *src, ref, f"oci:{out}:bench"])
                    pull = time.perf_counter() - t
                    got = manifest_digest(out)
                    if got != want:
                        sys.exit(f"{name}: pulled manifest {got}, pushed {want}")
                finally:
                    proc.terminate()
                    proc.wait()
                results[name]["push"].append(size / 1e6 / push)
                results[name]["pull"].append(size / 1e6 / pull)
                print(f"round {r}: {name:15s} push {size / 1e6 / push:7.0f} MB/s   pull {size / 1e6 / pull:7.0f} MB/s")
                shutil.rmtree(work, ignore_errors=True)
        med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in results.items()}
        print()
        print(f"{'registry':16s} {'push MB/s':>10s} {'pull MB/s':>10s}   (medians)")
        for n in ("kbuild", "docker-registry"):
            print(f"{n:16s} {med[n]['push']:10.0f} {med[n]['pull']:10.0f}")
        print(f"ratio kbuild/docker-registry: push {med['kbuild']['push'] / med['docker-registry']['push']:.2f}, "
              f"pull {med['kbuild']['pull'] / med['docker-registry']['pull']:.2f} (target >= 1.0); digests identical")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
