#!/usr/bin/env bash
# Builds the binaries and starts three storage daemons and one router from
# sharding.toml. Ctrl-C stops them all.
#
#   ./launch.sh                 # router on 127.0.0.1:8080, shards on 8081-8083
#   KVDB_CACHE_SIZE=2147483648 ./launch.sh
set -euo pipefail
cd "$(dirname "$0")"

config=${CONFIG_FILE:-sharding.toml}
datadir=${DATA_DIR:-database}
mkdir -p bin "$datadir"
go build -o bin/storaged ./cmd/storaged
go build -o bin/router ./cmd/router

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop INT TERM EXIT

for shard in $(sed -n 's/^name *= *"\(.*\)"/\1/p' "$config"); do
  bin/storaged -db-location="$datadir/$shard.db" -config-file="$config" -shard="$shard" &
  pids+=($!)
done
bin/router -config-file="$config" "$@" &
pids+=($!)
echo "router on http://127.0.0.1:8080 ($(( ${#pids[@]} - 1 )) storage daemons); Ctrl-C stops all"
wait -n || true
