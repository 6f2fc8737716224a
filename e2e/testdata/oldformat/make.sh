#!/usr/bin/env bash
# make.sh OLD_ROUTER OUT_DIR: writes OUT_DIR/kvdb.db with the router
# binary of commit 53b2d90 (before message records), single-node mode, and
# the old router's own answers to GET of each context (OUT_DIR/*.json.gz).
# See README.md.
set -euo pipefail
router=$1
out=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
addr=127.0.0.1:18931
"$router" -db-location="$work/kvdb.db" -http-addr=$addr -cache-size=0 >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf http://$addr/healthz >/dev/null && break; sleep 0.1; done
api=http://$addr/api/v1
curl -sf -X POST $api/topics -H 'Content-Type: application/json' \
  -d '{"name":"old","description":"written before message records"}' >/dev/null

# messages N PREFIX: a JSON array of N messages, roles user/assistant in
# turn, contents "PREFIX i" (i from 1).
messages() {
  local n=$1 prefix=$2 i role sep=""
  printf '['
  for ((i = 1; i <= n; i++)); do
    role=user; ((i % 2 == 0)) && role=assistant
    printf '%s{"role":"%s","content":"%s %d"}' "$sep" $role "$prefix" $i
    sep=,
  done
  printf ']'
}
put() { curl -sf -X PUT "$api/topics/old/contexts/$1" -H 'Content-Type: application/json' --data-binary @- >/dev/null; }
printf '{"metadata":{"model":"llama2","tags":["chat","short"]},"content":{"text":"a short chat","messages":%s}}' "$(messages 3 'short turn')" | put short
printf '{"metadata":{"model":"llama2","tags":["chat","long"]},"content":{"text":"a long chat","messages":%s}}' "$(messages 2500 'long turn')" | put long
printf '{"metadata":{"tags":["note"]},"content":{"text":"a plain text context, no messages","embeddings":[0.25,0.5,1]}}' | put plain
for id in short long plain; do
  curl -sf "$api/topics/old/contexts/$id" | gzip -9n >"$out/$id.json.gz"
done
kill -TERM $pid
wait $pid
cp "$work/kvdb.db" "$out/kvdb.db"
