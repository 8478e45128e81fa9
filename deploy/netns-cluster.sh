#!/usr/bin/env bash
# A Cairn cluster spread over network namespaces on this machine, one per host, joined by
# a bridge in a "switch" namespace: for tests that cut and restore links.
#
#   deploy/netns-cluster.sh up      WORKDIR CHUNKSERVERS [MASTER_FLAGS…]
#   deploy/netns-cluster.sh cut     WORKDIR HOST      # take HOST's link down (m, c0, c1, …)
#   deploy/netns-cluster.sh heal    WORKDIR HOST
#   deploy/netns-cluster.sh block   WORKDIR HOST HOST # drop all traffic between two hosts
#   deploy/netns-cluster.sh unblock WORKDIR HOST HOST
#   deploy/netns-cluster.sh cli     WORKDIR ARGS…     # `cairn` run on the client's host
#   deploy/netns-cluster.sh pid     WORKDIR NAME      # the PID of master0, zookeeper, …
#   deploy/netns-cluster.sh down    WORKDIR
#
# Hosts get 10.213.77.1 (master, also where the CLI runs) and 10.213.77.10+i (chunkserver
# i) on a private bridge; nothing leaves the namespaces. With NETNS_MASTERS=2 there are two
# masters (m at .1, m2 at .2), ZooKeeper on its own host (z, .3) and the CLI on a host of
# its own (u, .5), so that each master can be cut off from each other host. Names carry a
# per-WORKDIR tag, and WORKDIR/state records every namespace and PID, which `down` removes
# and ends.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(realpath -m "${CAIRN_BUILD:-$ROOT/build}")
CMD=${1:?usage}; WORK=$(realpath -m "${2:?usage}"); shift 2
STATE=$WORK/state
TAG=$(printf '%s' "$WORK" | md5sum | cut -c1-5)
SW=cs$TAG-sw
ns() { echo "cs$TAG-$1"; }
addr() {
  case "$1" in
    m) echo 10.213.77.1 ;; m2) echo 10.213.77.2 ;; z) echo 10.213.77.3 ;; u) echo 10.213.77.5 ;;
    *) echo "10.213.77.$((10 + ${1#c}))" ;;
  esac
}
MASTERS_N=${NETNS_MASTERS:-1}
[ -f "$WORK/masters" ] && MASTERS_N=$(cat "$WORK/masters")
MASTER_LIST=10.213.77.1:7700
[ "$MASTERS_N" = 2 ] && MASTER_LIST=10.213.77.1:7700,10.213.77.2:7700
CLIENT_HOST=m
[ "$MASTERS_N" = 2 ] && CLIENT_HOST=u

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
    issue admin --role admin
    if [ "$MASTERS_N" = 2 ]; then
      add_host m2; add_host z; add_host u
      printf '%s\n' "tickTime=500" "dataDir=$WORK/zk" "clientPort=2181" \
        "clientPortAddress=10.213.77.3" "minSessionTimeout=1000" "maxSessionTimeout=60000" \
        "admin.enableServer=false" >"$WORK/zoo.cfg"
      start zookeeper z "$WORK/zookeeper.log" java -Xmx256m \
        -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$WORK/zoo.cfg"
      for _ in $(seq 1 100); do
        ip netns exec "$(ns z)" bash -c 'exec 3<>/dev/tcp/10.213.77.3/2181' 2>/dev/null && break
        sleep 0.1
      done
      for h in m m2; do
        issue "master-$h" --role master --host "$(addr "$h")"
        start "master-$h" "$h" "$WORK/master-$h.log" "$BUILD/master/cairn-master" \
          --listen "$(addr "$h"):7700" --data "$WORK/master-$h" --chunk-size 1048576 \
          --heartbeat 0.5 --credentials "$WORK/tls/master-$h" --http none \
          --zookeeper 10.213.77.3:2181 "$@"
      done
    else
      issue master --role master --host 10.213.77.1
      start master m "$WORK/master.log" "$BUILD/master/cairn-master" --listen 10.213.77.1:7700 \
        --data "$WORK/master" --chunk-size 1048576 --heartbeat 0.5 --credentials "$WORK/tls/master" "$@"
    fi
    echo "$MASTERS_N" >"$WORK/masters"
    for i in $(seq 0 $((N - 1))); do
      issue "c$i" --role chunkserver --host "$(addr "c$i")"
      start "chunkserver$i" "c$i" "$WORK/c$i.log" "$BUILD/chunkserver/cairn-chunkserver" \
        --listen "$(addr "c$i"):7710" --data "$WORK/c$i" --master "$MASTER_LIST" --rack "rack$i" \
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
  block | unblock)
    op=add; [ "$CMD" = unblock ] && op=del
    ip -n "$(ns "$1")" route "$op" blackhole "$(addr "$2")/32"
    ip -n "$(ns "$2")" route "$op" blackhole "$(addr "$1")/32" ;;
  pid) awk -v n="$1" '$1 == "pid" && $2 == n { p = $3 } END { print p }' "$STATE" ;;
  cli) exec ip netns exec "$(ns "$CLIENT_HOST")" "$BUILD/cli/cairn" --master "$MASTER_LIST" \
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
