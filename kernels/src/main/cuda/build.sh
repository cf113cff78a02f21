#!/usr/bin/env bash
# Builds the CUDA kernels into one fatbin (sm_90a and sm_80 code, compute_80 PTX) loaded by the CUDA backend from
# the classpath. Without nvcc the build goes on without kernels and the backend reports that at run time.
# Usage: build.sh OUTPUT_DIR
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)"
out="$1"
mkdir -p "$out"
if ! command -v nvcc >/dev/null 2>&1; then
  echo "[dsflow] nvcc not found: building without CUDA kernels (the cuda backend will be unavailable)"
  exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for f in "$src"/*.cu; do
  nvcc -c -rdc=false -O3 -std=c++17 -Xptxas -O3 \
    -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=sm_80 -gencode arch=compute_80,code=compute_80 \
    -fatbin -o "$tmp/$(basename "$f" .cu).fatbin" "$f"
done
# one fatbin per family: the backend loads each as a module
cp "$tmp"/*.fatbin "$out"/
ls "$tmp"/*.fatbin | xargs -n1 basename | sed 's/\.fatbin$//' > "$out/modules.txt"
echo "[dsflow] built $(wc -l < "$out/modules.txt") CUDA kernel modules into $out"
