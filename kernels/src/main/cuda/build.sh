#!/usr/bin/env bash
# Builds the CUDA kernels into one fatbin per .cu (sm_90a and sm_80 code, compute_80 PTX), each loaded by the CUDA
# backend from the classpath as a module, with the list of the kernels it exports (<module>.kernels: CudaRuntime looks
# up these functions, so no kernel name is written down twice). Without nvcc the build goes on without kernels and the
# backend reports that at run time.
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
  module=$(basename "$f" .cu)
  mkdir "$tmp/$module"
  nvcc -c -rdc=false -O3 -std=c++17 -Xptxas -O3 \
    -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=sm_80 -gencode arch=compute_80,code=compute_80 \
    -fatbin --keep --keep-dir "$tmp/$module" -o "$tmp/$module.fatbin" "$f"
  # the module's kernels: the entry points of the PTX its code was made from (kept above; this toolkit may come
  # without cuobjdump)
  sed -n 's/^\.visible \.entry \([A-Za-z_0-9]*\)(.*/\1/p' "$tmp/$module"/*.ptx | sort -u > "$tmp/$module.kernels"
  if [ ! -s "$tmp/$module.kernels" ]; then
    echo "[dsflow] $f exports no kernel" >&2
    exit 1
  fi
done
rm -f "$out"/*.fatbin "$out"/*.kernels   # a family split or renamed leaves no module behind
cp "$tmp"/*.fatbin "$tmp"/*.kernels "$out"/
ls "$tmp"/*.fatbin | xargs -n1 basename | sed 's/\.fatbin$//' > "$out/modules.txt"
echo "[dsflow] built $(wc -l < "$out/modules.txt") CUDA kernel modules ($(cat "$tmp"/*.kernels | wc -l) kernels) into $out"
