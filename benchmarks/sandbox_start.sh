#!/usr/bin/env bash
# Sandbox start-to-exit of /bin/true: kbuild against `runc run` of the same root
# filesystem (the busybox stack, exported as an OCI layout and unpacked by
# umoci), interleaved in one run; prints p50, p99 and the ratios.
# Usage: bash benchmarks/sandbox_start.sh [--runs 200]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
swift build -c release --product kbuild >/dev/null
swift build -c release --product kbuild-sandbox >/dev/null
data=$(mktemp -d /tmp/kbuild-bench-XXXX)
trap 'rm -rf "$data"' EXIT
export KBUILD_DATA_DIR=$data
.build/release/kbuild stack create busybox >/dev/null
.build/release/kbuild sandbox bench --stack busybox "$@"
