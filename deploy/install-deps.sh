#!/usr/bin/env bash
# Installs the Debian 12 packages Cairn builds, tests and runs with. Needs root.
#   deploy/install-deps.sh [--test]   --test adds what the tests drive: curl, a real
#                                     Prometheus (and promtool) and headless Chromium
set -euo pipefail
PACKAGES=(
  build-essential meson ninja-build pkg-config
  capnproto libcapnp-dev libleveldb-dev libfuse3-dev fuse3 libssl-dev
  zookeeper libzookeeper-mt-dev
  libgtest-dev libgmock-dev libcli11-dev libfmt-dev nlohmann-json3-dev
  iproute2 procps python3
)
[ "${1:-}" = --test ] && PACKAGES+=(curl prometheus chromium)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "install-deps: run as root to install: ${missing[*]}" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No recommends: the tests start their own Prometheus, and need no exporter beside it.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "installed: ${missing[*]}"
fi
