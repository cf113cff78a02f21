#!/usr/bin/env bash
# On a GPU host without a JDK or Maven: unpacks what shared/tools/gpu-pack.sh packed under .gpu/ (a Java runtime, the
# engine jar and the JUnit console launcher) and runs the GPU test classes of the kernels module over its compiled test
# classes (carried as kernels/target/test-classes, or packed as .gpu/test-classes.tar.xz to save a call's carry: the
# tests read models by paths relative to kernels/). The engine jar or the job's GPU jar (which holds the engine) will do.
# Usage (repository root): dev/gpu/run-gpu-tests.sh [JUnit console selectors, default: the package io.dsflow.engine.cuda]
set -euo pipefail
source "$(dirname "$0")/unpack.sh"
if [ ! -d kernels/target/test-classes ] && [ -f .gpu/test-classes.tar.xz ]; then
  mkdir -p kernels/target && tar xJf .gpu/test-classes.tar.xz -C kernels/target
fi
cd kernels
selectors=("$@")
[ ${#selectors[@]} -gt 0 ] || selectors=(--select-package io.dsflow.engine.cuda)
"$root/jre/bin/java" -cp "target/test-classes:$root/lib/*" org.junit.platform.console.ConsoleLauncher execute \
  --disable-banner --details=summary --details-theme=ascii "${selectors[@]}"
