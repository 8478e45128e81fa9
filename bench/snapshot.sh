#!/usr/bin/env bash
# Snapshots and copies that share chunks, on the local cluster (TLS on, a standby master,
# three chunkservers, three copies, 64 MiB chunks): `cp` of a large file inside the mount
# (chunks shared) against a copy by bytes through the mount (`dd`), with the disk each
# adds; `cairn snapshot` of that file; the first write to each shared chunk afterwards
# (a local copy of the chunk on its chunkservers); and snapshots of trees of FILES/10 and
# FILES files (time in proportion to the entries, not the bytes); a snapshot of a file of
# BIG_MB (10240) made of the large file's chunks (copy_file_range at chunk-aligned offsets,
# so it takes no disk). Then, with Debian's moosefs-* packages installed, the same `cp` and
# `dd` on MooseFS (three chunkservers, three copies: ../shared/bench/moosefs-up.sh).
#
#   bench/snapshot.sh [MB] [FILES] [BIG_MB]    defaults 1024, 10000, 10240
set -euo pipefail
MB=${1:-1024}
FILES=${2:-10000}
BIG_MB=${3:-10240}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$ROOT/../shared/bench
WORK=$(mktemp -d /var/tmp/cairn-snapshot.XXXXXX)
cleanup() {
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
  if [ -e "$WORK/mfs/pids" ]; then
    "$SHARED/moosefs-down.sh" "$WORK/mfs" "$WORK/mfs-mnt" --purge >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
CAIRN_MOUNT=$WORK/mnt CAIRN_MASTER_PORT=${CAIRN_MASTER_PORT:-7590} \
  CAIRN_COORDINATOR_PORT=${CAIRN_COORDINATOR_PORT:-7650} \
  "$ROOT/deploy/cairn-local.sh" start "$WORK/cluster" >/dev/null
eval "$("$ROOT/deploy/cairn-local.sh" env "$WORK/cluster")"
CAIRN=$ROOT/build/cli/cairn
MNT=$WORK/mnt

now() { date +%s.%N; }
# Disk the cluster's data (under DATA) takes, in MiB (every replica).
DATA=$WORK/cluster
used() { du -sm "$DATA" | cut -f1; }
# Runs a command; prints its name, seconds and the disk it added.
figure() {
  local name=$1
  shift
  sync
  local before start end
  before=$(used)
  start=$(now)
  "$@"
  end=$(now)
  sync
  python3 -c "print('%-40s %9.3f s %8d MiB' % ('$name', $end - $start, $(used) - $before))"
}

head -c "${MB}M" /dev/urandom >"$MNT/big"
sync -f "$MNT/big"
printf "%-40s %11s %12s\n" "figure (${MB} MiB file)" "time" "disk added"
figure "cp inside the mount (chunks shared)" cp "$MNT/big" "$MNT/copy"
# dd, as cat and cp would use copy_file_range (and share chunks) too.
figure "copy by bytes through the mount (dd)" \
  dd if="$MNT/big" of="$MNT/bytes" bs=8M conv=fsync status=none
cmp "$MNT/big" "$MNT/copy"
figure "cairn snapshot of the file" "$CAIRN" snapshot /big /big-snap
# The first write to each shared chunk copies it on its chunkservers.
CHUNKS=$(( (MB + 63) / 64 ))
figure "first 4 KiB write to each of $CHUNKS chunks" python3 - "$MNT/big" "$CHUNKS" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
for i in range(int(sys.argv[2])):
    os.pwrite(fd, b"w" * 4096, i * (64 << 20) + 4096)
    os.fsync(fd)
os.close(fd)
EOF
cmp -s "$MNT/big" "$MNT/big-snap" && { echo "the snapshot changed with its source" >&2; exit 1; }

# A file of BIG_MB made of the large file's chunks, then its snapshot: the time goes with
# the chunks (one more owner each), not the bytes.
BIG_CHUNKS=$(( (BIG_MB + 63) / 64 ))
python3 - "$MNT/big-snap" "$MNT/huge" "$MB" "$BIG_MB" <<'EOF'
import os, sys
src = os.open(sys.argv[1], os.O_RDONLY)
dst = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o644)
mb, big = int(sys.argv[3]) << 20, int(sys.argv[4]) << 20
offset = 0
while offset < big:
    n = min(mb, big - offset)
    done = 0
    while done < n:
        done += os.copy_file_range(src, dst, n - done, done, offset + done)
    offset += n
os.fsync(dst)
EOF
figure "cairn snapshot of a $BIG_MB MiB file ($BIG_CHUNKS chunks)" "$CAIRN" snapshot /huge /huge-snap

# Trees: FILES small files in 10 directories.
python3 - "$MNT/tree" "$FILES" <<'EOF'
import os, sys
root, files = sys.argv[1], int(sys.argv[2])
for d in range(10):
    os.makedirs(f"{root}/d{d}", exist_ok=True)
    for i in range(files // 10):
        with open(f"{root}/d{d}/f{i}", "wb") as f:
            f.write(b"x" * 4096)
EOF
echo
printf "%-40s %11s\n" "snapshot of a tree" "time"
# The first snapshot of the tree revokes the write leases its files still hold (written a
# moment ago): one version change per file on its chunkservers. Later ones have none to
# revoke.
for what in "/tree/d0 $((FILES / 10)) leases" "/tree $FILES leases" "/tree/d0 $((FILES / 10)) none" \
  "/tree $FILES none"; do
  set -- $what
  START=$(now)
  "$CAIRN" snapshot "$1" "$1-snap-$3"
  END=$(now)
  python3 -c "print('%-40s %9.3f s' % ('$2 files, leases to revoke: $3', $END - $START))"
done

"$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null
command -v mfsmaster >/dev/null || { echo "MooseFS not installed: no comparison"; exit 0; }
"$SHARED/moosefs-up.sh" "$WORK/mfs" "$WORK/mfs-mnt" 3 3 >/dev/null
DATA=$WORK/mfs
head -c "${MB}M" /dev/urandom >"$WORK/mfs-mnt/big"
sync -f "$WORK/mfs-mnt/big"
echo
printf "%-40s %11s %12s\n" "MooseFS (${MB} MiB file)" "time" "disk added"
figure "cp inside the MooseFS mount" cp "$WORK/mfs-mnt/big" "$WORK/mfs-mnt/copy"
figure "copy by bytes through it (dd)" \
  dd if="$WORK/mfs-mnt/big" of="$WORK/mfs-mnt/bytes" bs=8M conv=fsync status=none
cmp "$WORK/mfs-mnt/big" "$WORK/mfs-mnt/copy"
