#!/usr/bin/env bash
# kbuild trace on a large store: 10,000 releases and 1,000 processes of one app
# (trace-bench makes them with the library, then times the kbuild CLI end to end,
# process start included). Target (issue 6): trace PID at most 100 ms at p99.
# Usage: bash benchmarks/trace.sh [--releases 10000] [--processes 1000] [--runs 50]
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product kbuild >/dev/null
swift build -c release --product trace-bench >/dev/null
data=$(mktemp -d /tmp/kbuild-bench-trace-XXXX)
trap 'rm -rf "$data"' EXIT
.build/release/trace-bench "$PWD/.build/release/kbuild" "$data/data" "$@"
