#!/usr/bin/env bash
# Cairn against MooseFS, back to back on this machine, with the same workload
# (../shared/bench/fs-bench.sh): each with three chunkservers and three copies of every
# chunk. Prints every figure with the ratio Cairn/MooseFS. Cairn runs as the README
# starts it: TLS on every connection and a standby master.
#
# Then the CPU each system spends, all its daemons together (masters, chunkservers, the
# mount, and Cairn's ZooKeeper and MapReduce daemons, idle here), read from /proc before
# and after each of: writing 1 GiB of random bytes (dd, 1 MiB blocks, fsync), reading it
# back cold, and 10,000 creates of empty files. On a small machine that hosts every
# daemon, this is what bounds throughput.
#
#   bench/vs-moosefs.sh [--quick]      (--quick: fs-bench's quick mode, 256 MiB, 2,000 files)
#
# Needs root (mounts, page-cache drops) and Debian's moosefs-* and fio packages, which it
# installs when missing.
set -euo pipefail
QUICK=${1:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(realpath -m "${CAIRN_SHARED:-$ROOT/../shared}")/bench
WORK=$(mktemp -d /var/tmp/cairn-vs-mfs.XXXXXX)
TSV=$WORK/results.tsv

need=()
for p in moosefs-master moosefs-chunkserver moosefs-client moosefs-cli fio; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ "$QUICK" = --quick ]; then CPU_MIB=256 CPU_FILES=2000; else CPU_MIB=1024 CPU_FILES=10000; fi
head -c "$((CPU_MIB << 20))" /dev/urandom >"$WORK/random"

# CPU seconds (user + system) of the daemons whose command line names $WORK, not counting
# this script's own tools.
daemon_cpu() {
  python3 - "$WORK" <<'PY'
import os, sys
work, hz, total = sys.argv[1], os.sysconf("SC_CLK_TCK"), 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    if work not in cmd or comm in ("dd", "python3", "fio", "bash", "sh", "head"):
        continue
    fields = stat[stat.rindex(")") + 2 :].split()
    total += int(fields[11]) + int(fields[12])  # utime, stime
print(total / hz)
PY
}
# cpu_row LABEL FIGURE BEFORE AFTER SCALE UNIT: one row of CPU seconds, scaled.
cpu_row() {
  python3 -c "print('$1\t$2\t%.2f\t$6' % (($4 - $3) * $5))" >>"$TSV"
}
# cpu_phases MOUNT LABEL: CPU per GiB written and read, and per 10,000 creates.
cpu_phases() {
  local mnt=$1 label=$2 before after
  mkdir "$mnt/cpu.$$"
  sync; echo 3 >/proc/sys/vm/drop_caches
  before=$(daemon_cpu)
  dd if="$WORK/random" of="$mnt/cpu.$$/big" bs=1M conv=fsync status=none
  after=$(daemon_cpu)
  cpu_row "$label" cpu_write "$before" "$after" "1024 / $CPU_MIB" s/GiB
  sync; echo 3 >/proc/sys/vm/drop_caches
  before=$(daemon_cpu)
  dd if="$mnt/cpu.$$/big" of=/dev/null bs=1M status=none
  after=$(daemon_cpu)
  cpu_row "$label" cpu_read "$before" "$after" "1024 / $CPU_MIB" s/GiB
  before=$(daemon_cpu)
  python3 -c '
import os, sys
d = sys.argv[1]
os.mkdir(d)
for i in range(int(sys.argv[2])):
    open(os.path.join(d, "f%d" % i), "w").close()
' "$mnt/cpu.$$/files" "$CPU_FILES"
  after=$(daemon_cpu)
  cpu_row "$label" cpu_create "$before" "$after" "10000 / $CPU_FILES" s/10k
  rm -rf "$mnt/cpu.$$"
}

cleanup() {
  "$SHARED/moosefs-down.sh" "$WORK/mfs" "$WORK/mfs-mnt" --purge >/dev/null 2>&1 || true
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cairn" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$SHARED/moosefs-up.sh" "$WORK/mfs" "$WORK/mfs-mnt" 3 3
FS_BENCH_TSV=$TSV "$SHARED/fs-bench.sh" "$WORK/mfs-mnt" moosefs $QUICK
cpu_phases "$WORK/mfs-mnt" moosefs
"$SHARED/moosefs-down.sh" "$WORK/mfs" "$WORK/mfs-mnt" --purge >/dev/null

CAIRN_MOUNT=$WORK/cairn-mnt CAIRN_MASTER_PORT=${CAIRN_MASTER_PORT:-7790} \
  "$ROOT/deploy/cairn-local.sh" start "$WORK/cairn"
FS_BENCH_TSV=$TSV "$SHARED/fs-bench.sh" "$WORK/cairn-mnt" cairn $QUICK
cpu_phases "$WORK/cairn-mnt" cairn

python3 "$ROOT/bench/ratio-table.py" "$TSV" moosefs cairn "(cpu_*: lower is better)"
