#!/usr/bin/env bash
# What the durability contract costs (README "Durability"): the local cluster as the README
# starts it (TLS, a standby master), once as it is (a change answered once it is in both
# masters' logs, synced within 10 ms; fsync waits for a sync) and once with
# --sync-every-mutation (HDFS's rule: every change synced on both before its answer), back
# to back with the same workload: ../shared/bench/fs-bench.sh through the mount, then
# namespace calls through the master API (cairn-metabench) with 1 and 32 in flight.
# Prints every figure for both and the ratio default / every-mutation.
#
#   bench/durability.sh [--quick]      (--quick: fs-bench's quick mode, 3,000 API calls)
#
# Needs root (mounts, page-cache drops) and fio.
set -euo pipefail
QUICK=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(realpath -m "${CAIRN_SHARED:-$ROOT/../shared}")/bench
WORK=$(mktemp -d /var/tmp/cairn-durability.XXXXXX)
TSV=$WORK/results.tsv
PORT=${CAIRN_MASTER_PORT:-7390}
if [ "$QUICK" = --quick ]; then FILES=3000; else FILES=20000; fi
cleanup() {
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

for mode in default every; do
  flags=""
  [ "$mode" = every ] && flags="--sync-every-mutation"
  CAIRN_MASTER_FLAGS=$flags CAIRN_MOUNT=$WORK/mnt CAIRN_MASTER_PORT=$PORT \
    CAIRN_COORDINATOR_PORT=${CAIRN_COORDINATOR_PORT:-7450} \
    "$ROOT/deploy/cairn-local.sh" start "$WORK/cluster" >/dev/null
  FS_BENCH_TSV=$TSV "$SHARED/fs-bench.sh" "$WORK/mnt" "$mode" $QUICK >/dev/null
  (
    eval "$("$ROOT/deploy/cairn-local.sh" env "$WORK/cluster")"
    for parallel in 1 32; do
      "$ROOT/build/bench/cairn-metabench" --dir / --files "$FILES" --parallel "$parallel" |
        awk -v m="$mode" -v p="$parallel" '{printf "%s\tapi_%s_%s\t%s\tops/s\n", m, $1, p, $2}' >>"$TSV"
    done
  )
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null
  rm -rf "$WORK/cluster"
done

python3 "$ROOT/bench/ratio-table.py" "$TSV" every default
