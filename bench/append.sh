#!/usr/bin/env bash
# Record append throughput: 1, 4 and 16 appenders (separate processes, each its own client)
# appending records to one file at once, against one writer writing a new file front to
# back, on the local cluster (TLS on, three chunkservers, three copies). Each figure moves
# the same number of bytes, ends with them synced and starts after `sync` (so that no
# figure pays for the last one's dirty pages). Prints MB/s and the ratio of each
# append figure to the single writer's (GFS reported 6.0 MB/s for one appender and 4.8 for
# 16 on a 12.5 MB/s link).
#
#   bench/append.sh [MB] [RECORD_KB]     MB per figure (default 256), KiB per record (1024)
set -euo pipefail
MB=${1:-256}
RECORD_KB=${2:-1024}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /var/tmp/cairn-append.XXXXXX)
cleanup() {
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
CAIRN_MOUNT=$WORK/mnt CAIRN_MASTER_PORT=${CAIRN_MASTER_PORT:-7490} \
  CAIRN_COORDINATOR_PORT=${CAIRN_COORDINATOR_PORT:-7550} \
  "$ROOT/deploy/cairn-local.sh" start "$WORK/cluster" >/dev/null
eval "$("$ROOT/deploy/cairn-local.sh" env "$WORK/cluster")"
BENCH=$ROOT/build/bench/cairn-appendbench
"$ROOT/build/cli/cairn" mkdir /bench

now() { date +%s.%N; }
sync
"$BENCH" --mode write --mb "$MB" --path /bench/sequential >"$WORK/write.tsv"
WRITE=$(cut -f2 "$WORK/write.tsv")
printf "%-22s %10s %8s\n" "figure" "MB/s" "ratio"
printf "%-22s %10.1f %8s\n" "sequential write, 1" "$WRITE" "1.00"
for N in 1 4 16; do
  EACH=$(( (MB + N - 1) / N ))
  sync
  START=$(now)
  PIDS=()
  for i in $(seq 1 "$N"); do
    "$BENCH" --mode append --mb "$EACH" --record-kb "$RECORD_KB" --path "/bench/log$N" \
      >"$WORK/append$N.$i.tsv" &
    PIDS+=($!)
  done
  for p in "${PIDS[@]}"; do wait "$p"; done
  END=$(now)
  python3 -c "import sys; mb=$EACH*$N*1048576/1e6; r=mb/($END-$START); \
print('%-22s %10.1f %8.2f' % ('record append, $N', r, r/$WRITE))"
done
