#!/usr/bin/env bash
# Packs the Java runtime for a GPU host without a JDK as .gpu/runtime.tar.xz, 14 MB instead of shared/tools/gpu-pack.sh's
# 22 MB: the same modules, jlink'd without its own zip compression so that xz packs the whole image (xz over zip-
# compressed modules gains little). gpu-pack.sh keeps a runtime.tar.xz it finds, so run this first; it is what lets the
# job's GPU jar, the broker and the runtime travel together under the 64 MiB a device call carries.
# Usage (repository root): dev/gpu/pack-runtime.sh
set -euo pipefail
out=.gpu
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
jlink --add-modules java.base,java.instrument,java.logging,java.management,java.management.rmi,java.naming,java.net.http,java.rmi,java.scripting,java.security.jgss,java.security.sasl,java.sql,java.xml,jdk.crypto.ec,jdk.management,jdk.unsupported,jdk.incubator.vector,jdk.zipfs \
  --strip-debug --no-header-files --no-man-pages --compress=0 --output "$tmp/jre" >/dev/null
tar cf - -C "$tmp" jre | xz -9e -T0 > "$out/runtime.tar.xz"
du -h "$out/runtime.tar.xz"
