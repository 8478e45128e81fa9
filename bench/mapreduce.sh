#!/usr/bin/env bash
# MapReduce word count over SIZE_MIB (default 2048) of generated text on the local cluster
# (deploy/cairn-local.sh: three chunkservers, a worker beside each), against a
# single-process `tr | sort | uniq -c` over the same local file, and against the same job
# with --no-locality. The input is stored at goal 1, so that placement decides whether a
# map reads its own host's disk (at goal 3 on three hosts every map is local whatever the
# scheduler does). Prints MB/s and the data-local share of each run, and checks that all
# three agree on the counts.
#
#   bench/mapreduce.sh [SIZE_MIB=2048]
set -euo pipefail
SIZE_MIB=${1:-2048}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/build
WORK=$(mktemp -d /var/tmp/cairn-mrbench.XXXXXX)
export CAIRN_MASTER_PORT=${CAIRN_MASTER_PORT:-17900} CAIRN_COORDINATOR_PORT=${CAIRN_COORDINATOR_PORT:-17990}
export CAIRN_MOUNT=none CAIRN_WORKER_SLOTS=${CAIRN_WORKER_SLOTS:-1}
cleanup() {
  "$ROOT/deploy/cairn-local.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Text: words of a Zipf-like vocabulary, lines of 0-20 words, 64 MiB generated once and
# repeated with a different line order each time.
python3 - "$WORK/block" <<'PY'
import random, sys
random.seed(42)
letters = "abcdefghijklmnopqrstuvwxyz"
vocab = ["".join(random.choice(letters) for _ in range(random.randint(1, 10))) for _ in range(50000)]
weights = [1.0 / (i + 1) for i in range(len(vocab))]
words = random.choices(vocab, weights, k=12_000_000)
out, i = [], 0
while i < len(words):
    n = random.randint(0, 20)
    out.append(" ".join(words[i:i + n]))
    i += n
data = ("\n".join(out) + "\n").encode()
open(sys.argv[1], "wb").write(data[: 64 << 20])
PY
: >"$WORK/input.txt"
for i in $(seq 1 $((SIZE_MIB / 64))); do
  if [ $((i % 2)) = 0 ]; then tac "$WORK/block" >>"$WORK/input.txt"; else cat "$WORK/block" >>"$WORK/input.txt"; fi
done
BYTES=$(stat -c %s "$WORK/input.txt")
echo "input: $((BYTES >> 20)) MiB"

"$ROOT/deploy/cairn-local.sh" start "$WORK/cluster" >/dev/null
eval "$("$ROOT/deploy/cairn-local.sh" env "$WORK/cluster")"
M=127.0.0.1:$CAIRN_MASTER_PORT
C=127.0.0.1:$CAIRN_COORDINATOR_PORT
"$B/cli/cairn" --master "$M" put -r 1 "$WORK/input.txt" /input.txt

now() { date +%s.%N; }
rate() { python3 -c "print(f'{$BYTES / 1e6 / ($2 - $1):.1f}')"; }

job() {  # job OUTPUT [flags] -> prints "seconds local maps"
  local t0 t1 report
  t0=$(now)
  report=$("$B/mapreduce/cairn-mapreduce" run --coordinator "$C" --input /input.txt \
    --output "$1" --reducers 3 --job wordcount --json "${@:2}")
  t1=$(now)
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); print($t1 - $t0, r['data_local_maps'], r['map_tasks'])" "$report"
}
read -r LOCAL_S LOCAL_L LOCAL_N < <(job /wc-local)
read -r ANY_S ANY_L ANY_N < <(job /wc-anywhere --no-locality)

t0=$(now)
LC_ALL=C tr -cs 'A-Za-z' '\n' <"$WORK/input.txt" | grep -v '^$' | LC_ALL=C sort | uniq -c >"$WORK/ref"
t1=$(now)
PIPE_S=$(python3 -c "print($t1 - $t0)")

# The three must agree.
awk '{print $2 "\t" $1}' "$WORK/ref" | LC_ALL=C sort >"$WORK/ref.sorted"
for out in /wc-local /wc-anywhere; do
  for p in 0 1 2; do "$B/cli/cairn" --master "$M" cat "$out/part-0000$p"; done | LC_ALL=C sort >"$WORK/got"
  cmp -s "$WORK/got" "$WORK/ref.sorted" || { echo "MISMATCH: $out differs from the pipeline" >&2; exit 1; }
done

printf '%-34s %8s %9s %11s\n' run seconds MB/s data-local
printf '%-34s %8.1f %9s %5s/%-5s\n' "cairn-mapreduce wordcount" "$LOCAL_S" "$(rate 0 "$LOCAL_S")" "$LOCAL_L" "$LOCAL_N"
printf '%-34s %8.1f %9s %5s/%-5s\n' "cairn-mapreduce --no-locality" "$ANY_S" "$(rate 0 "$ANY_S")" "$ANY_L" "$ANY_N"
printf '%-34s %8.1f %9s %11s\n' "tr | sort | uniq -c (one process)" "$PIPE_S" "$(rate 0 "$PIPE_S")" "-"
python3 -c "print(f'speed-up over the pipeline: {$PIPE_S / $LOCAL_S:.2f}x; locality on vs off: {$ANY_S / $LOCAL_S:.2f}x')"
