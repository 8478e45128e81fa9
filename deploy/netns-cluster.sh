#!/usr/bin/env bash
# A Cairn cluster spread over network namespaces on this machine, one per host, joined by
# a bridge in a "switch" namespace: for tests that cut and restore links.
#
#   deploy/netns-cluster.sh up    WORKDIR CHUNKSERVERS [MASTER_FLAGS…]
#   deploy/netns-cluster.sh cut   WORKDIR HOST        # take HOST's link down (m, c0, c1, …)
#   deploy/netns-cluster.sh heal  WORKDIR HOST
#   deploy/netns-cluster.sh cli   WORKDIR ARGS…       # `cairn` run on the master's host
#   deploy/netns-cluster.sh down  WORKDIR
#
# Hosts get 10.213.77.1 (master, also where the CLI runs) and 10.213.77.10+i (chunkserver
# i) on a private bridge; nothing leaves the namespaces. Names carry a per-WORKDIR tag, and
# WORKDIR/state records every namespace and PID, which `down` removes and ends.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(realpath -m "${CAIRN_BUILD:-$ROOT/build}")
CMD=${1:?usage}; WORK=$(realpath -m "${2:?usage}"); shift 2
STATE=$WORK/state
TAG=$(printf '%s' "$WORK" | md5sum | cut -c1-5)
SW=cs$TAG-sw
ns() { echo "cs$TAG-$1"; }
addr() { if [ "$1" = m ]; then echo 10.213.77.1; else echo "10.213.77.$((10 + ${1#c}))"; fi; }

add_host() {  # HOST
  local h=$1 n; n=$(ns "$1")
  ip netns add "$n"; echo "netns $n" >>"$STATE"
  ip link add "v$TAG$h" type veth peer name "p$TAG$h"
  ip link set "v$TAG$h" netns "$SW"
  ip link set "p$TAG$h" netns "$n"
  ip -n "$SW" link set "v$TAG$h" master br0 up
  ip -n "$n" link set lo up
  ip -n "$n" addr add "$(addr "$h")/24" dev "p$TAG$h"
  ip -n "$n" link set "p$TAG$h" up
}

start() {  # NAME HOST LOG COMMAND…
  local name=$1 h=$2 log=$3; shift 3
  ip netns exec "$(ns "$h")" "$@" >>"$log" 2>&1 &
  echo "pid $name $!" >>"$STATE"
}

case "$CMD" in
  up)
    N=${1:?chunkservers}; shift
    mkdir -p "$WORK"; : >"$STATE"
    ip netns add "$SW"; echo "netns $SW" >>"$STATE"
    ip -n "$SW" link add br0 type bridge
    ip -n "$SW" link set br0 up
    add_host m
    for i in $(seq 0 $((N - 1))); do add_host "c$i"; done
    # TLS as everywhere: a CA, and a certificate per host naming its address.
    "$BUILD/cli/cairn" admin ca init "$WORK/tls/ca" >/dev/null
    issue() { "$BUILD/cli/cairn" admin cert issue --ca "$WORK/tls/ca" --out "$WORK/tls/$1" --name "$@" >/dev/null; }
    issue master --role master --host 10.213.77.1
    issue admin --role admin
    start master m "$WORK/master.log" "$BUILD/master/cairn-master" --listen 10.213.77.1:7700 \
      --data "$WORK/master" --chunk-size 1048576 --heartbeat 0.5 --credentials "$WORK/tls/master" "$@"
    for i in $(seq 0 $((N - 1))); do
      issue "c$i" --role chunkserver --host "$(addr "c$i")"
      start "chunkserver$i" "c$i" "$WORK/c$i.log" "$BUILD/chunkserver/cairn-chunkserver" \
        --listen "$(addr "c$i"):7710" --data "$WORK/c$i" --master 10.213.77.1:7700 --rack "rack$i" \
        --credentials "$WORK/tls/c$i"
    done
    for _ in $(seq 1 100); do
      live=$("$0" cli "$WORK" servers --json 2>/dev/null | grep -c '"live": true' || true)
      [ "$live" -ge "$N" ] && exit 0
      sleep 0.1
    done
    echo "netns-cluster: only $live of $N chunkservers registered" >&2; exit 1 ;;
  cut) ip -n "$SW" link set "v$TAG$1" down ;;
  heal) ip -n "$SW" link set "v$TAG$1" up ;;
  cli) exec ip netns exec "$(ns m)" "$BUILD/cli/cairn" --master 10.213.77.1:7700 \
    --credentials "$WORK/tls/admin" "$@" ;;
  down)
    [ -f "$STATE" ] || exit 0
    tac "$STATE" | while read -r kind name pid; do
      if [ "$kind" = pid ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"; sleep 0.2; kill -9 "$pid" 2>/dev/null || true
      fi
    done
    tac "$STATE" | while read -r kind name _; do
      if [ "$kind" = netns ]; then ip netns del "$name" 2>/dev/null || true; fi
    done
    rm -f "$STATE" ;;
  *) echo "usage: see the top of $0" >&2; exit 2 ;;
esac
