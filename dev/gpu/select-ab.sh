#!/usr/bin/env bash
# The one-layer selection of the dspp default (4-bit labels, gqa=max over label rows a head) at the decode shapes of
# llama-3.1-8b, by dev/cuda/label_select_bench.cu in one call: sparse_select with its guessed threshold (cluster 1,
# checked slot by slot against the radix select over every candidate) and without (cluster 0); the cluster kernels
# where production takes them (8 x 32,700: clusters of two; 1 x 32,700: clusters of eight). The binary may be built
# beforehand on a machine with nvcc (.gpu/lsb); else it is built here. (Session 23's A/B of the label conversions,
# -DLABEL_I2F, ended with session 24's integer scores: docs/results/bench-h100-2026-12-07-s24.txt.)
# Usage (repository root): dev/gpu/select-ab.sh [OUTFILE]
set -euo pipefail
out=${1:-/dev/stdout}
if [ ! -x .gpu/lsb ]; then
  (cd dev/cuda && nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a label_select_bench.cu -o ../../.gpu/lsb)
fi
{
  for c in 0 1; do
    .gpu/lsb 4 1 64 $c 256 1 4028 188     # 64 x 4,096 (k 188 after sinks and window)
    .gpu/lsb 4 1 32 $c 512 1 8124 444     # 32 x 8,192
    .gpu/lsb 4 1 16 $c 1024 1 16316 956   # 16 x 16,384
  done
  .gpu/lsb 4 1 8 2 1024 1 32700 1980      # 8 x 32,768
  .gpu/lsb 4 1 1 8 256 1 32700 1980       # 1 x 32,768
} > "$out" 2>&1
