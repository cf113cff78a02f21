#!/usr/bin/env bash
# Entry point of the Flink containers in docker-compose.yml: enables the plugins dsflow's deployment needs, then hands
# over to the image's own entry point with the arguments it was given (standalone-job ..., or taskmanager).
#  - Prometheus reporter (metrics.reporter.prom.*): plugins/metrics-prometheus, copied from opt/ where the image keeps it
#    there only;
#  - GPU external resource (TaskManagers): Flink ships it in opt/ only, and the TaskManager discovers its GPU through it.
set -euo pipefail
flink=/opt/flink
enable_plugin() { # $1: plugin folder, $2: jar name pattern
  if ! ls "$flink/plugins/$1/"$2 >/dev/null 2>&1; then
    mkdir -p "$flink/plugins/$1"
    cp "$flink/opt/"$2 "$flink/plugins/$1/" 2>/dev/null || cp -r "$flink/opt/$1/." "$flink/plugins/$1/"
  fi
}
enable_plugin metrics-prometheus 'flink-metrics-prometheus-*.jar'
if [ "${1:-}" = "taskmanager" ]; then
  enable_plugin external-resource-gpu 'flink-external-resource-gpu-*.jar'
fi
exec /docker-entrypoint.sh "$@"
