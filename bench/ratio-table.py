#!/usr/bin/env python3
"""Prints the rows a benchmark collected (FS_BENCH_TSV's "label<TAB>figure<TAB>value<TAB>unit")
as a table: per figure, the median of each label's values and the ratio NUMERATOR /
DENOMINATOR.

  ratio-table.py TSV DENOMINATOR NUMERATOR [NOTE]
"""
import statistics
import sys

tsv, den, num = sys.argv[1:4]
note = sys.argv[4] if len(sys.argv) > 4 else ""
rows, order = {}, []
for line in open(tsv):
    label, figure, value, unit = line.rstrip("\n").split("\t")
    if figure not in rows:
        rows[figure] = {"unit": unit}
        order.append(figure)
    rows[figure].setdefault(label, []).append(float(value))
width = max([18] + [len(f) for f in order])
print(f"{'figure':<{width}} {den:>10} {num:>10}  unit    {num}/{den}  {note}".rstrip())
for f in order:
    r = rows[f]
    d = statistics.median(r[den]) if den in r else None
    n = statistics.median(r[num]) if num in r else None
    ratio = f"{n / d:.2f}" if d and n is not None else "-"
    show = lambda v: "-" if v is None else f"{v:g}"
    print(f"{f:<{width}} {show(d):>10} {show(n):>10}  {r['unit']:<7} {ratio}")
