#!/usr/bin/env bash
# Failover time: kill -9 of the active master while a mount writes fsync'd files and the
# CLI puts files (tests/integration/ha_test.cc, real processes and a real ZooKeeper), RUNS
# times; prints each run's longest pause between two acknowledged writes and the median.
#
#   bench/failover.sh [RUNS]     RUNS default 5; needs root (mounts) and a build in ./build
set -euo pipefail
RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(realpath -m "${CAIRN_BUILD:-$ROOT/build}")
CAIRN_BUILD_DIR=$BUILD "$BUILD/tests/ha_test" --gtest_filter='*KillingTheActive*' \
  --gtest_repeat="$RUNS" 2>/dev/null | grep '^failover:' | tee /dev/stderr |
  sed 's/.*writes \([0-9.]*\) s.*/\1/' | sort -n |
  awk '{ v[NR] = $1 } END { printf "median of %d runs: %.2f s\n", NR, (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
