#!/usr/bin/env bash
# The same load through the engine alone and through the Flink job (embedded Kafka) on a GPU host without a JDK, in two
# device calls on one warm machine: a call carries at most 64 MiB including the working tree's tracked files (14.6 MB),
# and the runtime the job needs (dev/gpu/pack-runtime.sh, about 15 MB) and the job's jars (dsflow-gpu.jar with
# dsflow-broker.jar, 46 MB as xz) do not fit one.
#   here:    dev/gpu/pack-runtime.sh .gpu-rt
#            shared/tools/gpu-pack.sh job/target/dsflow-gpu.jar job/target/dsflow-broker.jar && mkdir -p .gpu-job \
#              && mv .gpu/app.tar.xz .gpu-job/
#   call 1:  carry .gpu-rt,  dev/gpu/job-loadgen.sh runtime
#   call 2:  carry .gpu-job, dev/gpu/job-loadgen.sh run OUTDIR LOADGEN-ARGS...   (within 30 s of call 1)
# run: the engine's loadgen with the arguments, then `loadgen --through job` with them (DELIVERY, default exactly-once);
# each report and its JSON under OUTDIR. A load of 1,024 x 1,024/1,024 takes about 5.5 minutes each way on an H100, more
# than one call's 10 together: ONLY=engine or ONLY=job runs one of them (a third call, on the same warm machine).
set -euo pipefail
root=/opt/dsflow
case "${1:-}" in
  runtime)
    rm -rf "$root" && mkdir -p "$root" && tar xJf .gpu-rt/runtime.tar.xz -C "$root" && "$root/jre/bin/java" -version ;;
  run)
    out=$2; shift 2
    [ -x "$root/jre/bin/java" ] || { echo "no runtime under $root: call 1 (job-loadgen.sh runtime) first" >&2; exit 3; }
    rm -rf "$root/lib" && tar xJf .gpu-job/app.tar.xz -C "$root"
    mkdir -p "$out"
    export RUST_FLAVOR=cpu
    java=("$root/jre/bin/java" -Xmx24g -XX:+UseParallelGC -Dai.djl.offline=true -cp "$root/lib/*")
    if [ "${ONLY:-engine}" = engine ]; then
      "${java[@]}" io.dsflow.job.cli.Main loadgen "$@" --json "$out/engine.json" > "$out/engine.txt" 2>&1 \
        || echo "engine loadgen failed: $(tail -3 "$out/engine.txt")"
    fi
    if [ "${ONLY:-job}" = job ]; then
      "${java[@]}" io.dsflow.job.cli.Main loadgen --through job --delivery "${DELIVERY:-exactly-once}" "$@" \
        --json "$out/job.json" > "$out/job.txt" 2>&1 || echo "job loadgen failed: $(tail -3 "$out/job.txt")"
    fi
    [ -f "$out/engine.txt" ] && grep -A5 "^loadgen: [0-9]* requests" "$out/engine.txt" | grep -v "^loadgen: [0-9]* s,"
    [ -f "$out/job.txt" ] && grep -A7 "^loadgen through the job" "$out/job.txt"
    true ;;
  *) echo "usage: job-loadgen.sh runtime | run OUTDIR LOADGEN-ARGS..." >&2; exit 2 ;;
esac
