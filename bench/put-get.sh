#!/usr/bin/env bash
# Times `cairn put` and `cairn get` of one file on a local cluster (master + three
# chunkservers, replication 3) against copying the same file on the local disk.
#
#   bench/put-get.sh [SIZE_MIB=1024]
#
# Needs root to drop the page cache before each cold read. Prints MB/s and ratios.
set -euo pipefail
SIZE_MIB=${1:-1024}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CAIRN=$ROOT/build/cli/cairn
WORK=$(mktemp -d /var/tmp/cairn-bench.XXXXXX)
export CAIRN_MASTER_PORT=${CAIRN_MASTER_PORT:-7750}
export CAIRN_MASTER=127.0.0.1:$CAIRN_MASTER_PORT
cleanup() { "$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

drop() { sync; [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches || true; }
now() { date +%s.%N; }
rate() { python3 -c "print(f'{$SIZE_MIB * 1048576 / 1e6 / ($2 - $1):.1f}')"; }

"$ROOT/deploy/cairn-local.sh" start "$WORK/cluster" >/dev/null
eval "$("$ROOT/deploy/cairn-local.sh" env "$WORK/cluster")"
head -c $((SIZE_MIB * 1048576)) /dev/urandom >"$WORK/src"

drop; t0=$(now); cp "$WORK/src" "$WORK/copy"; sync; t1=$(now)
local_copy=$(rate "$t0" "$t1")
drop; t0=$(now); "$CAIRN" put "$WORK/src" /bench.bin; t1=$(now)
put=$(rate "$t0" "$t1")
drop; t0=$(now); "$CAIRN" get /bench.bin "$WORK/back"; sync; t1=$(now)
get=$(rate "$t0" "$t1")
cmp -s "$WORK/src" "$WORK/back" || { echo "bench: the file read back differs" >&2; exit 1; }

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
printf '%-28s %10s  %s\n' "figure ($SIZE_MIB MiB)" "MB/s" "vs local cp"
printf '%-28s %10s  %s\n' "local cp (read+write+sync)" "$local_copy" "1.00"
printf '%-28s %10s  %s\n' "cairn put (3 replicas)" "$put" "$(ratio "$put" "$local_copy")"
printf '%-28s %10s  %s\n' "cairn get (cold)" "$get" "$(ratio "$get" "$local_copy")"
