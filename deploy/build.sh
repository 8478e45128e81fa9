#!/usr/bin/env bash
# Configures (once) and builds Cairn into BUILD_DIR (default ./build).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" --buildtype=debugoptimized "$@" >/dev/null
ninja -C "$BUILD"
