#!/usr/bin/env bash
# Packs the Java runtime for a GPU host without a JDK as DIR/runtime.tar.xz (default .gpu), smaller than
# shared/tools/gpu-pack.sh's 22 MB: jlink'd without its own zip compression so that xz packs the whole image (xz over
# zip-compressed modules gains little), and with the modules the Flink job needs besides the engine's: java.desktop
# (log4j-core's LoggerContext fires java.beans events: without it the job dies at its first logger) and java.rmi /
# java.management.rmi (the local cluster's JMX registry: without them its TaskManager never registers). Measured on
# this machine: the engine's commands and `loadgen --through job` run on it; java.net.http, java.scripting,
# jdk.crypto.ec are left out. jdk.jfr is in (under 1 MB more): a bench can record where the host's time goes
# (-XX:StartFlightRecording; read here with `jfr print`). gpu-pack.sh keeps a runtime.tar.xz it finds, so run this first.
# Usage (repository root): dev/gpu/pack-runtime.sh [DIR]
set -euo pipefail
out=${1:-.gpu}
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
jlink --add-modules java.base,java.desktop,java.instrument,java.logging,java.management,java.management.rmi,java.naming,java.rmi,java.security.jgss,java.security.sasl,java.sql,java.xml,jdk.jfr,jdk.management,jdk.unsupported,jdk.incubator.vector,jdk.zipfs \
  --strip-debug --no-header-files --no-man-pages --compress=0 --output "$tmp/jre" >/dev/null
tar cf - -C "$tmp" jre | xz -9e -T0 > "$out/runtime.tar.xz"
du -h "$out/runtime.tar.xz"
