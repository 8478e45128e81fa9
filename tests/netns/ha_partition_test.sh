#!/usr/bin/env bash
# Master availability across real partitions: two masters, ZooKeeper and three
# chunkservers each in their own network namespace, the CLI on a host of its own.
#  1. The active is cut off from ZooKeeper (all packets between them dropped): it stops,
#     the standby is elected, writes go on; healed, the old active comes back as a standby.
#  2. The active is cut off from its standby: after --standby-timeout the active records
#     that the standby is no longer in sync and goes on alone; healed, the standby catches
#     up and is in sync again.
#  3. The active is killed: the standby takes over with everything acknowledged in 1 and 2.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CAIRN_BUILD=${CAIRN_BUILD_DIR:-$ROOT/build}
NET=$ROOT/deploy/netns-cluster.sh
WORK=$(mktemp -d /tmp/cairn-netns-ha.XXXXXX)
WRITER=""
cleanup() {
  [ -n "$WRITER" ] && kill "$WRITER" 2>/dev/null || true
  "$NET" down "$WORK" || true
  [ -n "${CAIRN_KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$WORK"/*.log; do echo "== $f"; tail -8 "$f"; done >&2; exit 1; }
cli() { "$NET" cli "$WORK" "$@"; }
# The host (m or m2) of the master whose role is $1, or "".
host_of() {
  cli admin masters --json 2>/dev/null | python3 -c '
import json, sys
role = sys.argv[1]
for m in json.load(sys.stdin):
    if m["role"] == role:
        print("m" if m["address"].startswith("10.213.77.1:") else "m2")
        break' "$1" || true
}
wait_role() {  # HOST ROLE SECONDS
  for _ in $(seq 1 $(($3 * 5))); do
    [ "$(host_of "$2")" = "$1" ] && return 0
    sleep 0.2
  done
  return 1
}
count_log() { grep -c "$2" "$1" || true; }  # FILE PATTERN
wait_log() {  # FILE PATTERN SECONDS [BEFORE]: more than BEFORE lines match within SECONDS
  for _ in $(seq 1 $(($3 * 5))); do
    [ "$(count_log "$1" "$2")" -gt "${4:-0}" ] && return 0
    sleep 0.2
  done
  return 1
}
other() { if [ "$1" = m ]; then echo m2; else echo m; fi; }

NETNS_MASTERS=2 "$NET" up "$WORK" 3 --dead-after 3 --standby-timeout 2 || fail "cluster did not come up"
for _ in $(seq 1 100); do [ -n "$(host_of active)" ] && [ -n "$(host_of standby)" ] && break; sleep 0.2; done
A=$(host_of active)
[ -n "$A" ] || fail "no active master"
B=$(other "$A")
wait_role "$B" standby 20 || fail "no standby"
echo "active on $A, standby on $B"

writer() {  # puts files until $WORK/stop exists, logging each acknowledged one
  local i=0
  while [ ! -e "$WORK/stop" ] && [ $i -lt 2000 ]; do
    head -c $((1000 + i * 7919 % 200000)) /dev/urandom >"$WORK/src$i"
    if cli put "$WORK/src$i" "/w$i" 2>>"$WORK/writer.err"; then echo "$i" >>"$WORK/acked"; fi
    i=$((i + 1))
  done
}
writer & WRITER=$!
acked() { [ -f "$WORK/acked" ] && wc -l <"$WORK/acked" || echo 0; }
wait_progress() {  # more acknowledged files than now within SECONDS
  local start; start=$(acked)
  for _ in $(seq 1 $(($1 * 5))); do [ "$(acked)" -gt "$start" ] && return 0; sleep 0.2; done
  return 1
}
wait_progress 20 || fail "no write acknowledged at the start"

# 1. Active <-> ZooKeeper.
"$NET" block "$WORK" "$A" z
echo "cut $A off from ZooKeeper"
wait_role "$B" active 30 || fail "the standby was not elected while $A could not reach ZooKeeper"
wait_progress 30 || fail "writes did not go on after the election"
wait_log "$WORK/master-$A.log" "lost the connection to ZooKeeper\|ZooKeeper session expired" 15 ||
  fail "$A did not step down"
"$NET" unblock "$WORK" "$A" z
wait_role "$A" standby 40 || fail "$A did not come back as a standby"
echo "1 passed: $A stepped down, $B took over, $A follows again"
A=$(host_of active); B=$(other "$A")

# 2. Active <-> standby.
wait_progress 20 || fail "no writes before the second cut"
before=$(count_log "$WORK/master-$A.log" "standby 10.213.77.* is in sync")
# $A may have dropped $B already in 1 (a slow catch-up): only a new drop counts.
dropped=$(count_log "$WORK/master-$A.log" "standby .* stops following")
"$NET" block "$WORK" "$A" "$B"
echo "cut $A off from its standby $B"
# A put whose log entries reached the standby just before the cut may still be
# acknowledged, so the drop is awaited first and the writes are judged after it.
wait_log "$WORK/master-$A.log" "standby .* stops following" 15 "$dropped" ||
  fail "$A kept waiting for $B"
wait_progress 30 || fail "writes stopped after the standby was dropped"
[ "$(host_of active)" = "$A" ] || fail "the active changed although ZooKeeper saw it"
"$NET" unblock "$WORK" "$A" "$B"
wait_log "$WORK/master-$A.log" "standby 10.213.77.* is in sync" 30 "$before" ||
  fail "$B did not get back in sync with $A"
wait_progress 20 || fail "no writes after healing"
echo "2 passed: $A went on alone, $B caught up"

# 3. The active dies: everything acknowledged is on the standby.
touch "$WORK/stop"
wait "$WRITER" || true
WRITER=""
# The standby may have fallen behind during the last puts and be catching up: only one in
# sync (and so recorded in ZooKeeper) may take over.
wait_role "$B" standby 30 || fail "$B is not an in-sync standby before $A dies"
sleep 1
kill -9 "$("$NET" pid "$WORK" "master-$A")"
wait_role "$B" active 30 || fail "$B did not take over after $A died"
n=0
while read -r i; do
  cli get "/w$i" "$WORK/back" 2>/dev/null || fail "acknowledged /w$i cannot be read"
  cmp -s "$WORK/src$i" "$WORK/back" || fail "/w$i differs from what was written"
  n=$((n + 1))
done <"$WORK/acked"
[ "$n" -gt 10 ] || fail "only $n files were acknowledged"
echo "3 passed: $n acknowledged files read back intact from $B"
echo "3 passed, 0 failed"
