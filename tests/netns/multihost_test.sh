#!/usr/bin/env bash
# Multi-host: master and four chunkservers each in their own network namespace. One
# chunkserver's link is cut while writers run and restored later; every acknowledged file
# must read back intact and every chunk must return to its goal.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CAIRN_BUILD=${CAIRN_BUILD_DIR:-$ROOT/build}
NET=$ROOT/deploy/netns-cluster.sh
WORK=$(mktemp -d /tmp/cairn-netns.XXXXXX)
WRITERS=()
cleanup() {
  for w in "${WRITERS[@]}"; do kill "$w" 2>/dev/null || true; done
  "$NET" down "$WORK" || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$WORK"/*.log; do echo "== $f"; tail -5 "$f"; done >&2; exit 1; }

"$NET" up "$WORK" 4 --dead-after 3 || fail "cluster did not come up"
cli() { "$NET" cli "$WORK" "$@"; }

writer() {  # ID: puts files until $WORK/stop exists, logging each acknowledged one
  local id=$1 i=0
  while [ ! -e "$WORK/stop" ] && [ $i -lt 500 ]; do
    head -c $((300000 + i * 7919)) /dev/urandom >"$WORK/src$id-$i"
    if cli put "$WORK/src$id-$i" "/w$id-$i" 2>>"$WORK/writer$id.err"; then echo "$i" >>"$WORK/acked$id"; fi
    i=$((i + 1))
  done
}
for id in 0 1; do writer "$id" & WRITERS+=($!); done

sleep 2
"$NET" cut "$WORK" c1
echo "cut c1's link"
# Past --dead-after the master declares it dead, and writes go on without it.
dead=0
for _ in $(seq 1 100); do
  grep -q "chunkserver 10.213.77.11:7710 (id .*) is dead" "$WORK/master.log" && { dead=1; break; }
  sleep 0.2
done
[ "$dead" = 1 ] || fail "the master did not declare c1 dead"
sleep 2
"$NET" heal "$WORK" c1
echo "restored c1's link"
sleep 3
touch "$WORK/stop"
for w in "${WRITERS[@]}"; do wait "$w" || true; done
WRITERS=()

acked=0
for id in 0 1; do
  [ -f "$WORK/acked$id" ] || continue
  while read -r i; do
    cli get "/w$id-$i" "$WORK/back" || fail "acknowledged /w$id-$i cannot be read"
    cmp -s "$WORK/src$id-$i" "$WORK/back" || fail "/w$id-$i differs from what was written"
    acked=$((acked + 1))
  done <"$WORK/acked$id"
done
[ "$acked" -gt 5 ] || fail "only $acked files were acknowledged"
echo "$acked acknowledged files read back intact"

for _ in $(seq 1 120); do
  h=$(cli admin health --json || true)
  if echo "$h" | grep -q '"under_replicated": 0' && echo "$h" | grep -q '"missing": 0' &&
     echo "$h" | grep -q '"copies_in_flight": 0'; then
    echo "every chunk back at its goal"
    echo "2 passed, 0 failed"
    exit 0
  fi
  sleep 0.5
done
fail "replication did not return to goal: $h"
