#!/usr/bin/env bash
# Quick start, command 2: install what is missing and run the whole test suite
# (unit tests, the ref-store conformance suite, the sandbox's escape suite, and
# end-to-end tests that run the real kbuild binary, curl, setpriv, kill -9,
# debootstrap, skopeo, umoci and runc against it). Runs as root: sandboxes need
# namespaces, overlay mounts and cgroups.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
swift build --build-tests
swift test --skip-build --disable-swift-testing
