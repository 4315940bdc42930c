#!/usr/bin/env bash
# REST API throughput: 20 KB JSON values over 1,000 keys, GET then POST, with
# wrk (-t1 -c32, 10 s by default). bigcache is pinned to core 0, wrk to core 1.
#   bash bench/rest.sh            # DURATION=10s CONNS=32 KEYS=1000 to change
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
KEYS=${KEYS:-1000}
PORT=${PORT:-36390}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null; rm -rf "$work"' EXIT

taskset -c 0 target/release/bigcache --data-dir "$work/data" --api-listen "127.0.0.1:$PORT" --log warn >/dev/null &
echo $! >"$work/pid"
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

value=$(head -c 15000 /dev/urandom | base64 -w0 | head -c 20000)
printf '{"value": "%s", "duration": "1h"}' "$value" >"$work/body.json"
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/body.json"); wrk.body = f:read("*a"); f:close()
local n = 0
request = function() n = n + 1; return wrk.format(nil, "/cache/bench/" .. (n % $KEYS)) end
LUA
cat >"$work/get.lua" <<LUA
local n = 0
request = function() n = n + 1; return wrk.format("GET", "/cache/bench/" .. (n % $KEYS)) end
LUA
# Preload every key so GETs are hits.
for i in $(seq 0 $((KEYS - 1))); do
    curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary "@$work/body.json" "http://127.0.0.1:$PORT/cache/bench/$i"
done
echo "== GET /cache (20 KB values, $KEYS keys, $CONNS connections, $DURATION)"
taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$work/get.lua" "http://127.0.0.1:$PORT" | grep -E "Requests/sec|Latency|50%|99%|Non-2xx"
echo "== POST /cache (20 KB values, $KEYS keys, $CONNS connections, $DURATION)"
taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$work/post.lua" "http://127.0.0.1:$PORT" | grep -E "Requests/sec|Latency|50%|99%|Non-2xx"
echo "RSS: $(ps -o rss= -p "$(cat "$work/pid")") KiB; disk: $(du -sh "$work/data" | cut -f1)"
