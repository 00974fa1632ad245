#!/usr/bin/env python3
"""Committed placements on etcd, against the same number of plain etcd txns of
the same size (the ceiling) and against SQLite, in the same run; then, with
--node-loss, the time from a node's last heartbeat to its processes serving
elsewhere (median of 10).

A placement is the scheduler's write path for one process placed on one of
5,000 simulated nodes: the node's assignment record (30 processes, about
7 KB of JSON) kept with the state, then a compare-and-swap of
nodes/NODE/assignment after reading it (scheduler-bench, release build). On
etcd the record goes to etcd too (EtcdRecords); on SQLite to the Keg. The
ceiling is one unconditional txn per placement carrying the same keys and
bytes (record, ref, sequence, change, head) and nothing read first. Each mode
runs PLACEMENTS placements with CONCURRENCY in flight against a fresh
single-member etcd (`kbuild etcd`, Debian's etcd-server 3.4.23, on this
machine's disk) or SQLite file.

Targets (issue 17): >= 2,000 placements/s committed on etcd; >= 0.5x the raw
txn ceiling. Node loss: median <= 10 s (Kubernetes ~350 s, Nomad ~20 s).

Usage: python3 benchmarks/scheduler.py [--nodes 5000] [--placements 150000] [--concurrency 64] [--node-loss]
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KBUILD = os.path.join(ROOT, ".build/release/kbuild")
BENCH = os.path.join(ROOT, ".build/release/scheduler-bench")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def with_etcd(work, fn):
    """Runs fn(spec) against a fresh one-member etcd started with `kbuild etcd`."""
    data = tempfile.mkdtemp(dir=work)
    client, peer = free_port(), free_port()
    etcd = subprocess.Popen([KBUILD, "etcd", "--data-dir", data, "--client-port", str(client), "--peer-port", str(peer)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in etcd.stdout:
            if line.startswith("state"):
                break
        else:
            sys.exit("kbuild etcd did not start")
        return fn(f"etcd://127.0.0.1:{client}")
    finally:
        etcd.terminate()
        etcd.wait(timeout=30)


def run(target, args):
    out = subprocess.run([BENCH, target, str(args.nodes), str(args.placements), str(args.concurrency)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--placements", type=int, default=150000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--node-loss", action="store_true", help="also the node-loss median (runs FaultTests' partition test 10 times; debug build)")
    args = p.parse_args()
    for product in ["kbuild", "scheduler-bench"]:
        subprocess.run(["swift", "build", "-c", "release", "--product", product], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="kbuild-bench-scheduler-")
    try:
        raw = with_etcd(work, lambda spec: run("raw:" + spec, args))
        etcd = with_etcd(work, lambda spec: run(spec, args))
        sqlite = run("sqlite:" + os.path.join(work, "sqlite"), args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.placements} placements on {args.nodes} simulated nodes, {args.concurrency} in flight "
          f"({os.cpu_count()} cores; etcd: one member, its gateway over HTTP)")
    print(f"{'store':<16}{'placements/s':>14}{'p50 ms':>10}{'p99 ms':>10}{'seconds':>10}")
    for r in [etcd, raw, sqlite]:
        print(f"{r['mode']:<16}{r['rate']:>14.0f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['seconds']:>10.1f}")
    print(f"etcd / raw txn ceiling: {etcd['rate'] / raw['rate']:.2f}x (target >= 0.5x); "
          f"etcd / sqlite: {etcd['rate'] / sqlite['rate']:.2f}x; etcd placements/s {etcd['rate']:.0f} (target >= 2000)")

    if args.node_loss:
        env = dict(os.environ, KBUILD_NODE_LOSS_RUNS="10")
        out = subprocess.run(["swift", "test", "--disable-swift-testing", "--filter", "FaultTests.testAPartitionedNodes"],
                             cwd=ROOT, env=env, capture_output=True, text=True)
        m = re.search(r"node loss: ([0-9. ]+) s", out.stdout + out.stderr)
        if out.returncode != 0 or not m:
            sys.exit("the partition test failed:\n" + (out.stdout + out.stderr)[-3000:])
        times = [float(t) for t in m.group(1).split()]
        print(f"node lost -> serving elsewhere (n={len(times)}): median {statistics.median(times):.1f} s, "
              f"max {max(times):.1f} s (target <= 10 s; Kubernetes ~350 s, Nomad ~20 s)")


if __name__ == "__main__":
    main()
