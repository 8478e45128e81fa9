#!/usr/bin/env bash
# Cairn against MooseFS, back to back on this machine, with the same workload
# (../shared/bench/fs-bench.sh): each with three chunkservers and three copies of every
# chunk. Prints every figure with the ratio Cairn/MooseFS.
#
#   bench/vs-moosefs.sh [--quick]
#
# Needs root (mounts, page-cache drops) and Debian's moosefs-* and fio packages, which it
# installs when missing.
set -euo pipefail
QUICK=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(realpath -m "${CAIRN_SHARED:-$ROOT/../shared}")/bench
WORK=$(mktemp -d /var/tmp/cairn-vs-mfs.XXXXXX)
TSV=$WORK/results.tsv

need=()
for p in moosefs-master moosefs-chunkserver moosefs-client moosefs-cli fio; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cleanup() {
  "$SHARED/moosefs-down.sh" "$WORK/mfs" "$WORK/mfs-mnt" --purge >/dev/null 2>&1 || true
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cairn" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$SHARED/moosefs-up.sh" "$WORK/mfs" "$WORK/mfs-mnt" 3 3
FS_BENCH_TSV=$TSV "$SHARED/fs-bench.sh" "$WORK/mfs-mnt" moosefs $QUICK
"$SHARED/moosefs-down.sh" "$WORK/mfs" "$WORK/mfs-mnt" --purge >/dev/null

CAIRN_MOUNT=$WORK/cairn-mnt CAIRN_MASTER_PORT=${CAIRN_MASTER_PORT:-7790} \
  "$ROOT/deploy/cairn-local.sh" start "$WORK/cairn"
FS_BENCH_TSV=$TSV "$SHARED/fs-bench.sh" "$WORK/cairn-mnt" cairn $QUICK

python3 - "$TSV" <<'PY'
import sys
rows = {}
order = []
for line in open(sys.argv[1]):
    label, figure, value, unit = line.rstrip("\n").split("\t")
    if figure not in rows:
        rows[figure] = {"unit": unit}
        order.append(figure)
    rows[figure][label] = float(value)
print(f"{'figure':<14} {'MooseFS':>10} {'Cairn':>10}  unit    Cairn/MooseFS")
for f in order:
    r = rows[f]
    m, c = r.get("moosefs"), r.get("cairn")
    ratio = f"{c / m:.2f}" if m and c is not None else "-"
    print(f"{f:<14} {m if m is not None else '-':>10} {c if c is not None else '-':>10}  {r['unit']:<7} {ratio}")
PY
