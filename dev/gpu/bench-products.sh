#!/usr/bin/env bash
# Issue 24's products in one device call: dense decode at serving batches and a 4,096-token prefill, with cuBLAS and
# with DSFLOW_CUBLAS=off (gemm_bf16), then the PyTorch peers at the same shapes (../shared/bench/peer_batched_decode.py
# copied to .gpu/, and dev/gpu/prefill_peer.py). Engine pack under .gpu/ (shared/tools/gpu-pack.sh).
# Usage (repository root): dev/gpu/bench-products.sh OUTDIR "PEER SHAPES" [bench runs: "BATCHES CONTEXTS"...]
#   PROMPT=N (default 4096, 0 for none): the first run's prefill row. Each run is its own process (a run's caches at
#   its largest batch and longest context must fit the GPU beside the weights). ROUTES (default "cublas off"): which
#   product routes run; POLICIES (default dense): bench's --kv-policy; BENCH_ARGS: more bench options (--profile).
set -euo pipefail
out=$1; peer=$2; shift 2
source "$(dirname "$0")/unpack.sh"
mkdir -p "$out"
i=0
for run in "$@"; do
  read -r batches contexts <<< "$run"
  i=$((i + 1))
  for route in ${ROUTES:-cublas off}; do
    prompt=0; [ $i = 1 ] && prompt=${PROMPT:-4096}
    env DSFLOW_CUBLAS=$([ $route = off ] && echo off || echo "") "$root/jre/bin/java" -Xmx16g -cp "$root/lib/*" \
      io.dsflow.cli.EngineMain bench --backend cuda --model synthetic:llama-3.1-8b --kv-policy "${POLICIES:-dense}" \
      --batch "$batches" --context "$contexts" --prompt $prompt --steps 32 ${BENCH_ARGS:-} > "$out/bench-$route-$i.txt" 2>&1 \
      || { echo "bench $route $run failed"; tail -5 "$out/bench-$route-$i.txt"; }
  done
done
[ -n "$peer" ] && timeout "${PEER_TIMEOUT:-300}" python3 .gpu/peer_batched_decode.py $peer > "$out/peer.txt" 2>&1 || echo "peer: rc $?"
timeout 120 python3 dev/gpu/prefill_peer.py 4096 > "$out/prefill-peer.txt" 2>&1 || echo "prefill peer: rc $?"
for f in "$out"/bench-*.txt; do
  echo "== $(basename "$f" .txt)"; grep -E "model loaded|copy|^ *(dense|ds|dspp)|^prefill|profile" "$f" | cut -c1-200
done
cat "$out/peer.txt" "$out/prefill-peer.txt" 2>/dev/null | grep -v Warning | tail -12
