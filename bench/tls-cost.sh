#!/usr/bin/env bash
# What TLS costs: the same workload (../shared/bench/fs-bench.sh) through a mount of the
# local cluster started with TLS on every connection (the default), and started with
# CAIRN_INSECURE=1 (plaintext), back to back. Prints each figure and the ratio TLS/plain.
#
#   bench/tls-cost.sh [--quick] [ROUNDS]     ROUNDS (default 1) alternate the order
#
# Needs root (mounts, page-cache drops) and fio, which it installs when missing.
set -euo pipefail
QUICK=""
[ "${1:-}" = --quick ] && { QUICK=--quick; shift; }
ROUNDS=${1:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(realpath -m "${CAIRN_SHARED:-$ROOT/../shared}")/bench
WORK=$(mktemp -d /var/tmp/cairn-tls-cost.XXXXXX)
TSV=$WORK/results.tsv
dpkg-query -W -f='${Status}' fio 2>/dev/null | grep -q "install ok installed" ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null; }

cleanup() {
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

run() {  # LABEL INSECURE
  CAIRN_INSECURE=$2 CAIRN_MOUNT=$WORK/mnt CAIRN_MASTER_PORT=${CAIRN_MASTER_PORT:-7790} \
    CAIRN_COORDINATOR_PORT=${CAIRN_COORDINATOR_PORT:-7890} \
    "$ROOT/deploy/cairn-local.sh" start "$WORK/cluster" >/dev/null
  FS_BENCH_TSV=$TSV "$SHARED/fs-bench.sh" "$WORK/mnt" "$1" $QUICK >/dev/null
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null
  rm -rf "$WORK/cluster"
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run tls 0; run plain 1; else run plain 1; run tls 0; fi
done

python3 "$ROOT/bench/ratio-table.py" "$TSV" plain tls "(medians of the rounds)"
