#!/usr/bin/env bash
# Re-replication speed: fill a cluster of four chunkservers with SIZE_MIB (default 2048) at
# goal 3, kill one, and time until every chunk is back at its goal. Reports the repair
# rate (bytes re-copied per second, in all and per surviving chunkserver) against this
# disk's sequential write rate.
#
#   bench/repair.sh [SIZE_MIB=2048]
set -euo pipefail
export CAIRN_INSECURE=1  # plaintext: this measures repair, not TLS
SIZE_MIB=${1:-2048}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/build
WORK=$(mktemp -d /var/tmp/cairn-repair.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$B/master/cairn-master" --listen 127.0.0.1:0 --data "$WORK/m" --port-file "$WORK/mport" \
  --heartbeat 0.5 --dead-after 3 --http none >"$WORK/master.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/mport" ] && break; sleep 0.05; done
M=$(cat "$WORK/mport")
for i in 0 1 2 3; do
  "$B/chunkserver/cairn-chunkserver" --listen "127.0.0.$((i + 2)):0" --data "$WORK/c$i" \
    --master "$M" --port-file "$WORK/c$i.port" --http none >"$WORK/c$i.log" 2>&1 &
  PIDS+=($!)
done
cairn() { "$B/cli/cairn" --master "$M" "$@"; }
for _ in $(seq 1 100); do
  [ "$(cairn servers --json | grep -c '"live": true')" -ge 4 ] && break; sleep 0.1
done

# Fill: 256 MiB files until SIZE_MIB.
head -c $((256 << 20)) /dev/urandom >"$WORK/src"
for i in $(seq 1 $((SIZE_MIB / 256))); do cairn put "$WORK/src" "/fill$i" >/dev/null; done
sleep 4   # let the writers' leases go idle, as on a cluster at rest

victim=1
lost=$(cairn servers --json | python3 -c "
import json,sys; s=json.load(sys.stdin)['servers']
print(next(x['chunks'] for x in s if x['address']=='$(cat "$WORK/c$victim.port")'))")
chunk_mib=$(cairn servers --json | python3 -c "import json,sys; print(json.load(sys.stdin)['chunk_size']>>20)")
kill "${PIDS[$((victim + 1))]}"
t0=$(date +%s.%N)
while :; do
  h=$(cairn admin health --json)
  if echo "$h" | grep -q '"under_replicated": 0' && echo "$h" | grep -q '"copies_in_flight": 0' &&
     ! cairn servers --json | grep -q '"live": true.*' ; then :; fi
  dead=$(cairn servers --json | python3 -c "
import json,sys; s=json.load(sys.stdin)['servers']
print(sum(1 for x in s if not x['live']))")
  if [ "$dead" = 1 ] && echo "$h" | grep -q '"under_replicated": 0' && echo "$h" | grep -q '"copies_in_flight": 0'; then break; fi
  sleep 0.2
done
t1=$(date +%s.%N)

sync; dd if=/dev/zero of="$WORK/disk" bs=1M count=1024 conv=fdatasync 2>"$WORK/dd.txt"
disk=$(grep -o '[0-9.]* [MG]B/s' "$WORK/dd.txt" | tail -1)
python3 - "$t0" "$t1" "$lost" "$chunk_mib" "$disk" <<'PY'
import sys
t0, t1, lost, chunk_mib, disk = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
secs = t1 - t0
mb = lost * chunk_mib * 1048576 / 1e6
print(f"chunks lost with the killed chunkserver: {lost} ({mb:.0f} MB)")
print(f"back at goal after {secs:.1f} s (including 3 s to declare it dead)")
print(f"repair rate: {mb / secs:.1f} MB/s in all, {mb / secs / 3:.1f} MB/s per surviving chunkserver")
print(f"this disk's sequential write rate (dd, fdatasync): {disk}")
PY
