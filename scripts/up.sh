#!/usr/bin/env bash
# Quick start, command 1: install what is missing, build kbuild (release),
# install it as /usr/local/bin/kbuild (with its sandbox helper beside it and the
# buildpacks in /usr/local/share/kbuild), make
# the busybox and debian-13 stacks if they are missing, and start `kbuild up` on
# its embedded defaults (data in ~/.kbuild, API and git on 127.0.0.1:7070, apps
# at http://APP.localhost:8080 through the router). App processes outlive it
# (a restart adopts them; `kbuild down` stops them). Stop it
# with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
echo "-----> building kbuild (release)"
swift build -c release --product kbuild
swift build -c release --product kbuild-sandbox
install -m 0755 .build/release/kbuild /usr/local/bin/kbuild
install -m 0755 .build/release/kbuild-sandbox /usr/local/bin/kbuild-sandbox
# The shipped buildpacks, where kbuild looks beside its binary (../share/kbuild/buildpacks).
rm -rf /usr/local/share/kbuild/buildpacks
mkdir -p /usr/local/share/kbuild
cp -r buildpacks /usr/local/share/kbuild/buildpacks
for stack in busybox debian-13 debian-13-addons; do
  if ! /usr/local/bin/kbuild stack ls | grep -q "^$stack\b"; then
    echo "-----> making the $stack stack"
    /usr/local/bin/kbuild stack create "$stack"
  fi
done
echo "-----> starting kbuild up"
exec /usr/local/bin/kbuild up "$@"
