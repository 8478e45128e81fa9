#!/usr/bin/env bash
# The master API at scale: grows a namespace through the master directly (no mount), with
# cairn-metabench's 32 calls in flight, in rounds of FILES files, each round in a new
# directory that stays. After each round: the files so far, the round's creates/s and
# stats/s, the active master's resident memory and its LevelDB's size on disk. Cairn runs
# as the README starts it (TLS, a standby master: every entry in the log of both before the
# reply, synced within 10 ms), without a mount; CAIRN_MASTER_FLAGS=--sync-every-mutation
# syncs every entry on both before the reply instead.
#
#   bench/namespace.sh [ROUNDS] [FILES]     ROUNDS default 10, FILES default 100000
#
# Writes about 100 bytes of LevelDB per file on each master; removes everything at the end.
set -euo pipefail
ROUNDS=${1:-10}
FILES=${2:-100000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /var/tmp/cairn-namespace.XXXXXX)
PORT=${CAIRN_MASTER_PORT:-7490}
cleanup() {
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

CAIRN_MOUNT=none CAIRN_MASTER_PORT=$PORT CAIRN_COORDINATOR_PORT=${CAIRN_COORDINATOR_PORT:-7550} \
  "$ROOT/deploy/cairn-local.sh" start "$WORK/cluster" >/dev/null
eval "$("$ROOT/deploy/cairn-local.sh" env "$WORK/cluster")"

# The active master's pid (`cairn admin masters` names it).
active_master() {
  local address
  address=$("$ROOT/build/cli/cairn" admin masters --json |
    python3 -c 'import json,sys; print([m["address"] for m in json.load(sys.stdin) if m["role"] == "active"][0])')
  pgrep -f "cairn-master --listen $address " | head -n 1
}

printf '%-6s %10s %10s %10s %10s %12s\n' round files create/s stat/s "RSS MiB" "LevelDB MiB"
total=0
for r in $(seq 1 "$ROUNDS"); do
  out=$("$ROOT/build/bench/cairn-metabench" --dir / --files "$FILES" --parallel 32 --keep)
  total=$((total + FILES))
  create=$(awk '$1 == "create" {print $2}' <<<"$out")
  stat=$(awk '$1 == "stat" {print $2}' <<<"$out")
  pid=$(active_master)
  rss=$(awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
  data=$(tr '\0' '\n' <"/proc/$pid/cmdline" | awk 'prev == "--data" {print} {prev = $0}')
  db=$(du -sm "$data" | cut -f1)
  printf '%-6s %10s %10s %10s %10s %12s\n' "$r" "$total" "$create" "$stat" "$rss" "$db"
done
