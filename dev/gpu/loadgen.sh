#!/usr/bin/env bash
# On a GPU host without a JDK: unpacks what shared/tools/gpu-pack.sh packed under .gpu/ (as run-gpu-tests.sh does) and
# runs the load generator with the arguments given; its report goes to stdout. With job/target/dsflow-gpu.jar packed
# (and dsflow-broker.jar beside it for --through job) it is the job's command line: `loadgen --through job ...` runs the
# load through Kafka and the Flink job; with the engine jar alone, the engine's loadgen.
# Usage (repository root): dev/gpu/loadgen.sh [loadgen arguments...]
set -euo pipefail
source "$(dirname "$0")/unpack.sh"
main=io.dsflow.cli.EngineMain
[ -f "$root/lib/dsflow-gpu.jar" ] && main=io.dsflow.job.cli.Main
exec "$root/jre/bin/java" -Xmx24g -XX:+UseParallelGC -Dai.djl.offline=true -cp "$root/lib/*" "$main" loadgen "$@"
