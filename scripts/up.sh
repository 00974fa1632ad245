#!/usr/bin/env bash
# Quick start, command 1: install what is missing, build kbuild (release),
# install it as /usr/local/bin/kbuild, and start `kbuild up` on its embedded
# defaults (data in ~/.kbuild, HTTP on 127.0.0.1:7070). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
echo "-----> building kbuild (release)"
swift build -c release --product kbuild
install -m 0755 .build/release/kbuild /usr/local/bin/kbuild
echo "-----> starting kbuild up"
exec /usr/local/bin/kbuild up "$@"
