# Sourced by the dev/gpu scripts on a GPU host without a JDK: unpacks what shared/tools/gpu-pack.sh packed under .gpu/
# (a Java runtime and the jars) into /opt/dsflow, once a machine (files there persist while it stays warm); sets root
# and the tokenizer's native flavour (DJL's CPU build, never a download).
root=/opt/dsflow
if [ ! -x "$root/jre/bin/java" ]; then
  mkdir -p "$root" && tar xJf .gpu/runtime.tar.xz -C "$root" && tar xJf .gpu/app.tar.xz -C "$root"
fi
export RUST_FLAVOR=cpu
