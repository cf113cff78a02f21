#!/usr/bin/env bash
# eval --backend cuda of two builds in one call (see bench-ab.sh for OLD and NEW): the probe model's accuracy and mass
# recall per policy, which a change that should change nothing must leave as it was.
# Usage (repository root): dev/gpu/eval-ab.sh OUTDIR [eval arguments...]
set -euo pipefail
out=$1; shift
source "$(dirname "$0")/unpack.sh"
mkdir -p "$out"
for build in old new; do
  cp=$root/lib/'*'
  [ "$build" = old ] && cp=".gpu/before-kernels.jar:$cp"
  "$root/jre/bin/java" -Xmx8g -cp "$cp" io.dsflow.cli.EngineMain eval --backend cuda "$@" > "$out/eval-$build.txt" 2>&1 \
    || { echo "eval $build failed"; tail -20 "$out/eval-$build.txt"; }
  grep -o "eval: length .*" "$out/eval-$build.txt" | grep policy | sed "s/^/$build /"
done
