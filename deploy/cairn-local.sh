#!/usr/bin/env bash
# A local Cairn cluster on this machine: two masters (one active, one hot standby, elected
# through a single-node ZooKeeper that the script runs itself), three chunkservers (each on
# its own loopback address, as if on its own host), a MapReduce coordinator with one worker
# beside each chunkserver, and a FUSE mount, all data under one directory.
#
#   deploy/cairn-local.sh start  [DATA_DIR]   default ./cairn-data
#   deploy/cairn-local.sh stop   [DATA_DIR]
#   deploy/cairn-local.sh status [DATA_DIR]
#   deploy/cairn-local.sh env    [DATA_DIR]   the export lines a root shell needs:
#                                             eval "$(deploy/cairn-local.sh env)"
#
# Secure by default: the first start makes a cluster CA and a certificate for every
# daemon, the mount and an admin in DATA_DIR/tls (keys 0600; the CA's key stays there
# too, so keep DATA_DIR private), and every connection is TLS 1.3 with client
# certificates. CAIRN_INSECURE=1 starts everything in plaintext instead (one trusted host).
#
# Environment: CAIRN_BUILD (binaries, default ./build), CAIRN_MASTER_PORT (7700; a second
# master listens on the next port), CAIRN_MASTERS (2; 1 for a single master and no
# ZooKeeper), CAIRN_ZK_PORT (ZooKeeper's client port, default the master's port + 99),
# CAIRN_CHUNK_SIZE (bytes, default 64 MiB; fixed when DATA_DIR is first used),
# CAIRN_MOUNT (mount point, default DATA_DIR/mnt; "none" for no mount),
# CAIRN_COORDINATOR_PORT (7800), CAIRN_WORKER_SLOTS (tasks per worker, default 1),
# CAIRN_MASTER_FLAGS (more flags for the master, e.g. "--trash-seconds 0"),
# CAIRN_HTTP_PORT (the master's status page and /metrics; default the master's port + 80,
# i.e. 7780; each chunkserver's is that + 10 on its own address, the coordinator's its
# port + 80). `status` prints the status page's URL.
# Every PID started is written to DATA_DIR/pids; stop ends exactly those.
set -euo pipefail

usage() { echo "usage: $0 start|stop|status|env [DATA_DIR]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
CMD=$1
DATA=$(realpath -m "${2:-./cairn-data}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(realpath -m "${CAIRN_BUILD:-$ROOT/build}")
PORT=${CAIRN_MASTER_PORT:-7700}
MASTERS=${CAIRN_MASTERS:-2}
[[ "$MASTERS" =~ ^[1-9]$ ]] || { echo "$0: CAIRN_MASTERS must be 1 to 9" >&2; exit 2; }
ZK=127.0.0.1:${CAIRN_ZK_PORT:-$((PORT + 99))}
MASTER=127.0.0.1:$PORT
for ((i = 1; i < MASTERS; i++)); do MASTER+=",127.0.0.1:$((PORT + i))"; done
# A running cluster's master address is remembered, so that stop and status need no flags.
if [ "$1" != start ] && [ -f "$DATA/master-address" ]; then MASTER=$(cat "$DATA/master-address"); fi
CHUNK_SIZE=${CAIRN_CHUNK_SIZE:-67108864}
PIDS=$DATA/pids
COORDINATOR=127.0.0.1:${CAIRN_COORDINATOR_PORT:-7800}
if [ "$1" != start ] && [ -f "$DATA/coordinator-address" ]; then COORDINATOR=$(cat "$DATA/coordinator-address"); fi
SLOTS=${CAIRN_WORKER_SLOTS:-1}
HTTP_PORT=${CAIRN_HTTP_PORT:-$((PORT + 80))}
COORDINATOR_HTTP=127.0.0.1:$((${COORDINATOR##*:} + 80))
MOUNT=${CAIRN_MOUNT:-$DATA/mnt}

TLS=$DATA/tls
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# The credentials flag of a component, or --insecure.
creds() { if [ "${CAIRN_INSECURE:-0}" = 1 ]; then echo --insecure; else echo "--credentials $TLS/$1"; fi; }

# A CA and every certificate the local cluster uses, made once.
make_certs() {
  [ "${CAIRN_INSECURE:-0}" = 1 ] && return 0
  local cairn=$BUILD/cli/cairn
  if [ ! -f "$TLS/ca/ca.pem" ]; then
    mkdir -p "$TLS"
    chmod 700 "$TLS"
    "$cairn" admin ca init "$TLS/ca" >/dev/null
  fi
  issue() {  # NAME ROLE [FLAGS...]
    local name=$1 role=$2
    shift 2
    [ -f "$TLS/$name/cert.pem" ] ||
      "$cairn" admin cert issue --ca "$TLS/ca" --role "$role" --name "$name" --out "$TLS/$name" "$@" >/dev/null
  }
  issue master master --host 127.0.0.1
  for i in 1 2 3; do
    issue "chunkserver$i" chunkserver --host "127.0.0.$((i + 1))"
    issue "worker$i" worker --host "127.0.0.$((i + 1))" --uid 0 --gids 0 --allow-root
  done
  issue coordinator worker --host 127.0.0.1 --uid 0 --gids 0 --allow-root
  issue mount mount --allow-root
  issue admin admin
}

# A single-node ZooKeeper from Debian's package, run from its jar with its own
# configuration, data and port under DATA_DIR (not the system's service).
start_zookeeper() {
  command -v java >/dev/null && [ -f /usr/share/java/zookeeper.jar ] ||
    { echo "$0: ZooKeeper is not installed (deploy/install-deps.sh installs it)" >&2; exit 1; }
  mkdir -p "$DATA/zookeeper/data"
  printf '%s\n' "tickTime=500" "dataDir=$DATA/zookeeper/data" "clientPort=${ZK##*:}" \
    "clientPortAddress=${ZK%:*}" "minSessionTimeout=1000" "maxSessionTimeout=60000" \
    "admin.enableServer=false" >"$DATA/zookeeper/zoo.cfg"
  java -Xmx256m -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$DATA/zookeeper/zoo.cfg" \
    >>"$DATA/logs/zookeeper.log" 2>&1 &
  echo "zookeeper $!" >>"$PIDS"
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/${ZK%:*}/${ZK##*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$0: ZooKeeper did not start on $ZK; see $DATA/logs/zookeeper.log" >&2
  exit 1
}

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
  make_certs
  echo "$MASTER" >"$DATA/master-address"
  scheme=https
  [ "${CAIRN_INSECURE:-0}" = 1 ] && scheme=http
  echo "$scheme://127.0.0.1:$HTTP_PORT/" >"$DATA/status-url"
  echo "$scheme://$COORDINATOR_HTTP/" >"$DATA/coordinator-status-url"
  : >"$PIDS"
  # The CLI below acts as the admin.
  if [ "${CAIRN_INSECURE:-0}" = 1 ]; then
    export CAIRN_INSECURE=1
    touch "$DATA/insecure"
  else
    export CAIRN_CREDENTIALS=$TLS/admin
    rm -f "$DATA/insecure"
  fi
  ha=()
  if [ "$MASTERS" -gt 1 ]; then
    start_zookeeper
    ha=(--zookeeper "$ZK")
  fi
  for ((i = 0; i < MASTERS; i++)); do
    name=master
    [ "$i" -gt 0 ] && name=master$((i + 1))
    # shellcheck disable=SC2086,SC2046  # the extra flags are words
    "$BUILD/master/cairn-master" --listen "127.0.0.1:$((PORT + i))" --data "$DATA/$name" \
      $(creds master) --chunk-size "$CHUNK_SIZE" --http "127.0.0.1:$((HTTP_PORT + i))" \
      "${ha[@]}" ${CAIRN_MASTER_FLAGS:-} >>"$DATA/logs/$name.log" 2>&1 &
    echo "$name $!" >>"$PIDS"
  done
  for i in 1 2 3; do
    host=127.0.0.$((i + 1))
    "$BUILD/chunkserver/cairn-chunkserver" --listen "$host:$((PORT + 9 + i))" \
      --data "$DATA/chunkserver$i" --master "$MASTER" --rack "rack$i" $(creds "chunkserver$i") \
      --http "$host:$((HTTP_PORT + 10))" \
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
  # shellcheck disable=SC2046
  "$BUILD/mapreduce/cairn-mapreduce" $(creds coordinator) coordinator --master "$MASTER" --listen "$COORDINATOR" \
    --http "$COORDINATOR_HTTP" >>"$DATA/logs/coordinator.log" 2>&1 &
  echo "coordinator $!" >>"$PIDS"
  # One worker beside each chunkserver, named as its host, so that maps read local replicas.
  for i in 1 2 3; do
    host=127.0.0.$((i + 1))
    rm -f "$DATA/worker$i.port"
    # shellcheck disable=SC2046
    "$BUILD/mapreduce/cairn-mapreduce" $(creds "worker$i") worker --coordinator "$COORDINATOR" --host "$host" \
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
    # shellcheck disable=SC2046
    "$BUILD/fuse/cairn-mount" --master "$MASTER" $(creds mount) "$MOUNT" -f >>"$DATA/logs/mount.log" 2>&1 &
    echo "mount $!" >>"$PIDS"
    for _ in $(seq 1 100); do mountpoint -q "$MOUNT" && break; sleep 0.1; done
    mountpoint -q "$MOUNT" || { echo "$0: mount did not appear at $MOUNT; see $DATA/logs" >&2; exit 1; }
    echo "$MOUNT" >"$DATA/mountpoint"
  fi
  if [ "$MASTERS" -gt 1 ]; then
    for _ in $(seq 1 100); do
      "$BUILD/cli/cairn" --master "$MASTER" admin masters >/dev/null 2>&1 && break
      sleep 0.1
    done
    echo "Cairn is running: masters $MASTER (one active, elected through ZooKeeper $ZK),"
    echo "  3 chunkservers, data in $DATA"
  else
    echo "Cairn is running: master $MASTER, 3 chunkservers, data in $DATA"
  fi
  echo "  MapReduce coordinator $COORDINATOR with 3 workers"
  echo "  status page: $(cat "$DATA/status-url") (metrics at /metrics)"
  [ "$MOUNT" = none ] || echo "  mounted at $MOUNT"
  if [ "${CAIRN_INSECURE:-0}" = 1 ]; then
    echo "  INSECURE: plaintext, no authentication (CAIRN_INSECURE=1)"
  else
    echo "  TLS on every connection; CA and certificates in $TLS"
  fi
  echo "  eval \"\$($0 env $DATA)\"; $BUILD/cli/cairn ls /"
  echo "  $BUILD/mapreduce/cairn-mapreduce run --input /in --output /out --job wordcount"
}

env_lines() {
  echo "export CAIRN_MASTER=$MASTER"
  echo "export CAIRN_COORDINATOR=$COORDINATOR"
  if [ ! -f "$DATA/insecure" ]; then
    echo "export CAIRN_CREDENTIALS=$TLS/admin"
    echo "unset CAIRN_INSECURE"
  else
    echo "export CAIRN_INSECURE=1"
    echo "unset CAIRN_CREDENTIALS"
  fi
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
  eval "$(env_lines)"
  [ -f "$DATA/status-url" ] && echo "status page: $(cat "$DATA/status-url")"
  [ -f "$DATA/coordinator-status-url" ] && echo "coordinator status page: $(cat "$DATA/coordinator-status-url")"
  "$BUILD/cli/cairn" --master "$MASTER" admin masters || rc=3
  "$BUILD/cli/cairn" --master "$MASTER" servers || rc=3
  return $rc
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_lines ;;
  *) usage ;;
esac
