#!/usr/bin/env bash
# Decode bench of two builds in one call, alternating rounds (machine starts differ by up to 15%, so only ratios
# within one call count): NEW is the engine jar packed under .gpu/ (shared/tools/gpu-pack.sh), OLD the same with an
# older build's thin kernels jar (.gpu/before-kernels.jar: its classes and fatbins) first on the class path.
# Usage (repository root): dev/gpu/bench-ab.sh ROUNDS OUTDIR [bench arguments...]
set -euo pipefail
rounds=$1; out=$2; shift 2
source "$(dirname "$0")/unpack.sh"
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  for build in old new; do
    cp=$root/lib/'*'
    [ "$build" = old ] && cp=".gpu/before-kernels.jar:$cp"
    "$root/jre/bin/java" -Xmx8g -cp "$cp" io.dsflow.cli.EngineMain bench --backend cuda "$@" \
      > "$out/bench-$build-r$r.txt" 2>&1 || { echo "bench $build round $r failed"; tail -20 "$out/bench-$build-r$r.txt"; }
  done
done
# one line a row: build, round, policy, batch, context, tokens/s
for f in "$out"/bench-*-r*.txt; do
  b=$(basename "$f" .txt)
  awk -v b="$b" '$2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ && NF >= 11 {printf "%-14s %-50s %4s %6s %10s\n", b, $1, $2, $3, $4}' "$f"
done | sort -k2,2 -k3,3n -k4,4n -k1,1
