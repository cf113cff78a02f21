#!/usr/bin/env bash
# On a GPU host without a JDK: unpacks what shared/tools/gpu-pack.sh packed under .gpu/ (as run-gpu-tests.sh does) and
# runs the engine's load generator (EngineMain loadgen) with the arguments given; its report goes to stdout.
# Usage (repository root): dev/gpu/loadgen.sh [loadgen arguments...]
set -euo pipefail
root=/opt/dsflow
if [ ! -x "$root/jre/bin/java" ]; then
  mkdir -p "$root" && tar xJf .gpu/runtime.tar.xz -C "$root" && tar xJf .gpu/app.tar.xz -C "$root"
fi
export RUST_FLAVOR=cpu
exec "$root/jre/bin/java" -Xmx16g -cp "$root/lib/*" io.dsflow.cli.EngineMain loadgen "$@"
