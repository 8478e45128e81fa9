#!/usr/bin/env bash
# A local Cairn cluster on this machine: one master, three chunkservers (each on its own
# loopback address, as if on its own host), a MapReduce coordinator with one worker beside
# each chunkserver, and a FUSE mount, all data under one directory.
#
#   deploy/cairn-local.sh start  [DATA_DIR]   default ./cairn-data
#   deploy/cairn-local.sh stop   [DATA_DIR]
#   deploy/cairn-local.sh status [DATA_DIR]
#
# Environment: CAIRN_BUILD (binaries, default ./build), CAIRN_MASTER_PORT (7700),
# CAIRN_CHUNK_SIZE (bytes, default 64 MiB; fixed when DATA_DIR is first used),
# CAIRN_MOUNT (mount point, default DATA_DIR/mnt; "none" for no mount),
# CAIRN_COORDINATOR_PORT (7800), CAIRN_WORKER_SLOTS (tasks per worker, default 1),
# CAIRN_MASTER_FLAGS (more flags for the master, e.g. "--trash-seconds 0").
# Every PID started is written to DATA_DIR/pids; stop ends exactly those.
set -euo pipefail

usage() { echo "usage: $0 start|stop|status [DATA_DIR]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
CMD=$1
DATA=$(realpath -m "${2:-./cairn-data}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(realpath -m "${CAIRN_BUILD:-$ROOT/build}")
PORT=${CAIRN_MASTER_PORT:-7700}
MASTER=127.0.0.1:$PORT
# A running cluster's master address is remembered, so that stop and status need no flags.
if [ "$1" != start ] && [ -f "$DATA/master-address" ]; then MASTER=$(cat "$DATA/master-address"); fi
CHUNK_SIZE=${CAIRN_CHUNK_SIZE:-67108864}
PIDS=$DATA/pids
COORDINATOR=127.0.0.1:${CAIRN_COORDINATOR_PORT:-7800}
if [ "$1" != start ] && [ -f "$DATA/coordinator-address" ]; then COORDINATOR=$(cat "$DATA/coordinator-address"); fi
SLOTS=${CAIRN_WORKER_SLOTS:-1}
MOUNT=${CAIRN_MOUNT:-$DATA/mnt}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

start() {
  for b in master/cairn-master chunkserver/cairn-chunkserver cli/cairn fuse/cairn-mount \
           mapreduce/cairn-mapreduce; do
    [ -x "$BUILD/$b" ] || { echo "$0: $BUILD/$b not built (run deploy/build.sh)" >&2; exit 1; }
  done
  if [ -f "$PIDS" ]; then
    while read -r name pid; do
      alive "$pid" && { echo "$0: $name ($pid) from $DATA is still running; stop it first" >&2; exit 1; }
    done <"$PIDS"
  fi
  mkdir -p "$DATA/logs"
  echo "$MASTER" >"$DATA/master-address"
  : >"$PIDS"
  # shellcheck disable=SC2086  # the extra flags are words
  "$BUILD/master/cairn-master" --listen "$MASTER" --data "$DATA/master" \
    --chunk-size "$CHUNK_SIZE" ${CAIRN_MASTER_FLAGS:-} >>"$DATA/logs/master.log" 2>&1 &
  echo "master $!" >>"$PIDS"
  for i in 1 2 3; do
    host=127.0.0.$((i + 1))
    "$BUILD/chunkserver/cairn-chunkserver" --listen "$host:$((PORT + 9 + i))" \
      --data "$DATA/chunkserver$i" --master "$MASTER" --rack "rack$i" \
      >>"$DATA/logs/chunkserver$i.log" 2>&1 &
    echo "chunkserver$i $!" >>"$PIDS"
  done
  for _ in $(seq 1 100); do
    live=$("$BUILD/cli/cairn" --master "$MASTER" servers --json 2>/dev/null | grep -c '"live": true' || true)
    [ "$live" -ge 3 ] && break
    sleep 0.1
  done
  [ "${live:-0}" -ge 3 ] || { echo "$0: only ${live:-0} of 3 chunkservers registered; logs in $DATA/logs" >&2; exit 1; }
  echo "$COORDINATOR" >"$DATA/coordinator-address"
  "$BUILD/mapreduce/cairn-mapreduce" coordinator --master "$MASTER" --listen "$COORDINATOR" \
    >>"$DATA/logs/coordinator.log" 2>&1 &
  echo "coordinator $!" >>"$PIDS"
  # One worker beside each chunkserver, named as its host, so that maps read local replicas.
  for i in 1 2 3; do
    host=127.0.0.$((i + 1))
    rm -f "$DATA/worker$i.port"
    "$BUILD/mapreduce/cairn-mapreduce" worker --coordinator "$COORDINATOR" --host "$host" \
      --scratch "$DATA/worker$i" --slots "$SLOTS" --port-file "$DATA/worker$i.port" \
      >>"$DATA/logs/worker$i.log" 2>&1 &
    echo "worker$i $!" >>"$PIDS"
  done
  for _ in $(seq 1 100); do
    [ -s "$DATA/worker1.port" ] && [ -s "$DATA/worker2.port" ] && [ -s "$DATA/worker3.port" ] && break
    sleep 0.1
  done
  [ -s "$DATA/worker3.port" ] || { echo "$0: the MapReduce workers did not join; logs in $DATA/logs" >&2; exit 1; }
  if [ "$MOUNT" != none ]; then
    mkdir -p "$MOUNT"
    if mountpoint -q "$MOUNT"; then
      echo "$0: $MOUNT is already a mount point" >&2
      exit 1
    fi
    "$BUILD/fuse/cairn-mount" --master "$MASTER" "$MOUNT" -f >>"$DATA/logs/mount.log" 2>&1 &
    echo "mount $!" >>"$PIDS"
    for _ in $(seq 1 100); do mountpoint -q "$MOUNT" && break; sleep 0.1; done
    mountpoint -q "$MOUNT" || { echo "$0: mount did not appear at $MOUNT; see $DATA/logs" >&2; exit 1; }
    echo "$MOUNT" >"$DATA/mountpoint"
  fi
  echo "Cairn is running: master $MASTER, 3 chunkservers, data in $DATA"
  echo "  MapReduce coordinator $COORDINATOR with 3 workers"
  [ "$MOUNT" = none ] || echo "  mounted at $MOUNT"
  echo "  export CAIRN_MASTER=$MASTER; $BUILD/cli/cairn ls /"
  echo "  export CAIRN_COORDINATOR=$COORDINATOR; $BUILD/mapreduce/cairn-mapreduce run --input /in --output /out --job wordcount"
}

stop() {
  [ -f "$PIDS" ] || { echo "nothing running from $DATA"; return 0; }
  if [ -f "$DATA/mountpoint" ]; then
    m=$(cat "$DATA/mountpoint")
    if mountpoint -q "$m"; then fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m"; fi
    rm -f "$DATA/mountpoint"
  fi
  # Reverse order: the mount, the workers, the coordinator, the chunkservers, the master last.
  tac "$PIDS" | while read -r name pid; do
    alive "$pid" || continue
    kill "$pid"
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      echo "$name ($pid) did not stop; killing it" >&2
      kill -9 "$pid"
    fi
  done
  rm -f "$PIDS"
  echo "Cairn in $DATA stopped"
}

status() {
  [ -f "$PIDS" ] || { echo "nothing running from $DATA"; return 3; }
  rc=0
  while read -r name pid; do
    if alive "$pid"; then echo "$name: running (pid $pid)"; else echo "$name: STOPPED"; rc=3; fi
  done <"$PIDS"
  "$BUILD/cli/cairn" --master "$MASTER" servers || rc=3
  return $rc
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
