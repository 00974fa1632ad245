#!/usr/bin/env bash
# Installs the Debian 12 packages kbuild builds and runs with (idempotent).
# Swift itself is not a Debian package: it must already be on PATH.
set -euo pipefail

packages=(
  pkg-config libgit2-dev libarchive-dev libzstd-dev libsqlite3-dev  # linked libraries
  git curl util-linux e2fsprogs diffutils findutils tar              # used by kbuild (mount, mkfs.ext4) and its tests
  busybox-static debootstrap iproute2 nftables                       # stacks; network namespaces and their firewall
  runc umoci skopeo                                                  # OCI peers: tests and the sandbox benchmark
  openssh-server openssh-client                                      # git push over SSH (kbuild git-shell) and its test
  chromium python3-pip                                               # the dashboard's browser tests (Playwright drives Debian's Chromium)
  etcd-server etcd-client                                            # the state on many machines (kbuild up --state etcd://…, kbuild etcd)
  openssl                                                            # the router's TLS tests make certificates with it
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(casync restic python3 docker-registry nginx-light wrk)   # benchmark peers
fi

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "-----> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package may start an etcd of its own on 2379 (an init script): kbuild starts the etcd it wants.
  if [[ " ${missing[*]} " == *" etcd-server "* && -x /etc/init.d/etcd ]]; then /etc/init.d/etcd stop >/dev/null 2>&1 || true; fi
fi

# Playwright and axe-core for the browser tests, from PyPI (`playwright install` cannot download browsers
# here: the tests drive Debian's /usr/bin/chromium).
if ! python3 -c "import playwright, axe_playwright_python" 2>/dev/null; then
  echo "-----> installing playwright and axe-playwright-python from PyPI"
  # Debian's own python3 refuses installs into the system (PEP 668) unless told; a pyenv or venv python does not.
  pip=(python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore playwright axe-playwright-python)
  "${pip[@]}" 2>/dev/null || "${pip[@]}" --break-system-packages
  python3 -c "import playwright, axe_playwright_python" || { echo "error: failed to install playwright from PyPI" >&2; exit 1; }
fi

if ! command -v swift >/dev/null; then
  for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
    [[ -x "$d/swift" ]] && export PATH="$d:$PATH"
  done
fi
command -v swift >/dev/null || {
  echo "error: swift not found: install a Swift 6 toolchain for Debian 12 (swift.org) and put it on PATH" >&2
  exit 1
}
