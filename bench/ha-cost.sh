#!/usr/bin/env bash
# What the standby costs: creates and mkdirs through a mount of the local cluster started
# with one master (CAIRN_MASTERS=1) and with two (every entry also in the standby's log
# before the reply), back to back, alternating the order;
# then the same through the master API (cairn-metabench: libcairn, 16 calls in flight).
# Prints each rate (median of the rounds) and the ratio two/one.
#
#   bench/ha-cost.sh [ROUNDS] [FILES]     ROUNDS default 3, FILES default 3000
#
# Needs root (mounts).
set -euo pipefail
ROUNDS=${1:-3}
FILES=${2:-3000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /var/tmp/cairn-ha-cost.XXXXXX)
cleanup() {
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

run() {  # MASTERS
  CAIRN_MASTERS=$1 CAIRN_MOUNT=$WORK/mnt CAIRN_MASTER_PORT=${CAIRN_MASTER_PORT:-7590} \
    CAIRN_COORDINATOR_PORT=${CAIRN_COORDINATOR_PORT:-7650} \
    "$ROOT/deploy/cairn-local.sh" start "$WORK/cluster" >/dev/null
  python3 - "$WORK/mnt" "$FILES" "$1" >>"$WORK/results.tsv" <<'PY'
import os, sys, time
mnt, n, masters = sys.argv[1], int(sys.argv[2]), sys.argv[3]
d = os.path.join(mnt, "creates")
os.mkdir(d)
t = time.monotonic()
for i in range(n):
    os.close(os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
create = n / (time.monotonic() - t)
t = time.monotonic()
for i in range(n // 3):
    os.mkdir(os.path.join(d, "d%d" % i))
mkdir = (n // 3) / (time.monotonic() - t)
print("%s\tcreate\t%.1f" % (masters, create))
print("%s\tmkdir\t%.1f" % (masters, mkdir))
PY
  (
    eval "$("$ROOT/deploy/cairn-local.sh" env "$WORK/cluster")"
    "$ROOT/build/bench/cairn-metabench" --dir / --files "$FILES" --parallel 16 |
      sed "s/^/$1\tapi-/; s/\t\/s\$//"
  ) >>"$WORK/results.tsv"
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null
  rm -rf "$WORK/cluster"
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run 1; run 2; else run 2; run 1; fi
done

python3 - "$WORK/results.tsv" <<'PY'
import sys, statistics
rates = {}
for line in open(sys.argv[1]):
    masters, what, rate = line.split()
    rates.setdefault((what, masters), []).append(float(rate))
print("%-10s %14s %14s %8s" % ("figure", "1 master /s", "2 masters /s", "2/1"))
for what in ("create", "mkdir", "api-create", "api-stat", "api-mkdir"):
    one = statistics.median(rates[(what, "1")])
    two = statistics.median(rates[(what, "2")])
    print("%-10s %14.0f %14.0f %8.2f" % (what, one, two, two / one))
PY
