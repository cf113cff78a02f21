#!/usr/bin/env bash
# Each kernel's device time in the timed steps of one bench row (Nsight Compute, one metric: gpu__time_duration), summed
# by kernel name over the steps and divided by them: the per-kernel account of a graph step that bench --profile's eager
# timeline cannot give (its step is 1.66x the graph's at 64 x 1,024). bench --profiler-range brackets the timed steps
# with cuProfilerStart / Stop, so ncu --profile-from-start off sees those alone. Compare the sum with the row's ms/step:
# the difference is what lies between kernels (launch gaps, tails).
# Usage (repository root, after dev/gpu/unpack.sh's packing): dev/gpu/step-kernels.sh OUT.csv STEPS BENCH-ARGS...
#   e.g. dev/gpu/step-kernels.sh $OUT/d64.csv 2 --batch 64 --context 1024 --kv-policy dense --prompt 0
set -euo pipefail
source "$(dirname "$0")/unpack.sh"
out=$1 steps=$2; shift 2
ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv --page raw \
  "$root/jre/bin/java" -Xmx8g -cp "$root/lib/*" io.dsflow.cli.EngineMain bench --backend cuda \
  --model synthetic:llama-3.1-8b --steps "$steps" --profiler-range "$@" > "$out"
python3 - "$out" "$steps" <<'PY'
import csv, sys, collections
path, steps = sys.argv[1], int(sys.argv[2])
rows = list(csv.reader(l for l in open(path, errors="replace") if l.startswith('"')))
head = rows[0]; name, time = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
units = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
scale, data = (units[rows[1][time]], rows[2:]) if rows[1][time] in units else (1e-3, rows[1:])
total, count = collections.defaultdict(float), collections.Counter()
for r in data:
    k = r[name].split("(")[0][:60]
    total[k] += float(r[time].replace(",", "")) * scale
    count[k] += 1
print(f"{path}: {len(data)} kernels, {sum(total.values()) / steps:.1f} us of kernel time a step")
for k, t in sorted(total.items(), key=lambda kv: -kv[1])[:20]:
    print(f"  {t / steps:9.1f} us  {count[k] // steps:4d}x  {k}")
PY
