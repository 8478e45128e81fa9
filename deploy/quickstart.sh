#!/usr/bin/env bash
# From a fresh Debian 12 machine (as root): install the packages, build, and start a local
# cluster with its data in DATA_DIR (default ./cairn-data).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
deploy/cairn-local.sh start "${1:-./cairn-data}"
