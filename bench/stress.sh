#!/usr/bin/env bash
# Random operations over sparse files (cairn-fsstress, as fsstress does: writes at random
# offsets, truncates, fallocate, copy_file_range, renames, links, unlinks, fsyncs), 4
# processes at once, on Cairn and on MooseFS back to back in one run, each with three
# chunkservers and three copies and no trash. Reports each one's time and the disk its
# chunkservers use afterwards, against the disk the same workload leaves on a local
# directory (the bytes actually written, holes left out) times three copies.
#
#   bench/stress.sh [OPS_PER_PROCESS=20000]
#
# Needs root and Debian's moosefs-* packages (installed when missing). MooseFS refuses
# fallocate's modes (EOPNOTSUPP); those operations are counted and skipped there.
set -euo pipefail
OPS=${1:-20000}
PROCS=4
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(realpath -m "${CAIRN_SHARED:-$ROOT/../shared}")/bench
STRESS=$ROOT/build/bench/cairn-fsstress
WORK=$(mktemp -d /var/tmp/cairn-stress.XXXXXX)
[ -x "$STRESS" ] || { echo "$0: $STRESS not built (run deploy/build.sh)" >&2; exit 1; }

need=()
for p in moosefs-master moosefs-chunkserver moosefs-client moosefs-cli; do
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

# run LABEL DIR: the workload on DIR, PROCS processes with seeds 1..PROCS; prints seconds.
run() {
  local start end pids=()
  start=$(date +%s.%N)
  for p in $(seq 1 $PROCS); do
    "$STRESS" --dir "$2/p$p" --ops "$OPS" --seed "$p" 2>>"$WORK/$1.log" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || { echo "$0: $1: cairn-fsstress failed:" >&2; tail -3 "$WORK/$1.log" >&2; exit 1; }; done
  end=$(date +%s.%N)
  echo "$end - $start" | bc | tee -a "$WORK/times"
}
used() { du -s --block-size=1 "$@" 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'; }
# settle DIRS...: waits until the disk used under DIRS stops shrinking (lazy deletion).
settle() {
  local last=-1 now
  for _ in $(seq 1 60); do
    now=$(used "$@")
    [ "$now" = "$last" ] && break
    last=$now
    sleep 2
  done
  echo "$now"
}

mkdir -p "$WORK/local"
LOCAL_T=$(run local "$WORK/local")
LOCAL_USE=$(used "$WORK/local")

"$SHARED/moosefs-up.sh" "$WORK/mfs" "$WORK/mfs-mnt" 3 3 >/dev/null
# MooseFS's own tools run inside its network namespace (see ../shared/bench/README.md).
nsenter -t "$(awk '$1 == "netns" {print $2}' "$WORK/mfs/pids")" -n \
  mfssettrashtime -r 0 "$WORK/mfs-mnt" >/dev/null
MFS_BASE=$(used "$WORK"/mfs/cs*/hdd)
MFS_T=$(run moosefs "$WORK/mfs-mnt")
MFS_USE=$(( $(settle "$WORK"/mfs/cs*/hdd) - MFS_BASE ))
MFS_SKIPPED=$(grep -o '([0-9]* unsupported)' "$WORK/moosefs.log" | tr -dc '0-9\n' | awk '{s+=$1} END {print s}')
"$SHARED/moosefs-down.sh" "$WORK/mfs" "$WORK/mfs-mnt" --purge >/dev/null

CAIRN_MOUNT=$WORK/cairn-mnt CAIRN_MASTER_PORT=${CAIRN_MASTER_PORT:-7790} \
  CAIRN_COORDINATOR_PORT=${CAIRN_COORDINATOR_PORT:-7890} CAIRN_MASTER_FLAGS="--trash-seconds 0" \
  "$ROOT/deploy/cairn-local.sh" start "$WORK/cairn" >/dev/null
CAIRN_BASE=$(used "$WORK"/cairn/chunkserver*)
CAIRN_T=$(run cairn "$WORK/cairn-mnt")
CAIRN_USE=$(( $(settle "$WORK"/cairn/chunkserver*) - CAIRN_BASE ))

python3 - "$OPS" "$PROCS" "$LOCAL_T" "$LOCAL_USE" "$MFS_T" "$MFS_USE" "$MFS_SKIPPED" "$CAIRN_T" "$CAIRN_USE" <<'PY'
import sys
ops, procs, lt, lu, mt, mu, ms, ct, cu = sys.argv[1:]
lt, mt, ct = float(lt), float(mt), float(ct)
lu, mu, cu = int(lu), int(mu), int(cu)
mb = lambda b: f"{b / 1e6:,.0f} MB"
print(f"{procs} x {ops} operations over sparse files (cairn-fsstress, seeds 1..{procs})")
print(f"{'':<10} {'seconds':>8} {'disk used':>12} {'vs 3 x local':>13}")
print(f"{'local':<10} {lt:>8.1f} {mb(lu):>12} {'':>13}")
print(f"{'MooseFS':<10} {mt:>8.1f} {mb(mu):>12} {mu / (3 * lu):>12.2f}x   ({ms} fallocate calls refused)")
print(f"{'Cairn':<10} {ct:>8.1f} {mb(cu):>12} {cu / (3 * lu):>12.2f}x")
print(f"Cairn / MooseFS: time {ct / mt:.2f}x, disk {cu / max(mu, 1):.2f}x")
PY
