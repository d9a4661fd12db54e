#!/usr/bin/env bash
# What the periodic corruption check (--experimental-corrupt-check-time)
# costs the requests it runs beside: one member, KEYS keys of 1 KiB loaded
# without the check, then restarted with or without the check (every
# 1 s) and DURATION seconds of one-at-a-time puts measured by ketch-bench.
# Prints p50 / p99 / max latency and puts/s for each run.
#
#   scripts/corrupt-check-stall.sh                       # build/ketch
#   KETCH=/path/to/other/ketch scripts/corrupt-check-stall.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-build/ketch-bench}
KETCH=${KETCH:-build/ketch}
KEYS=${KEYS:-100000}
DURATION=${DURATION:-8}
read -r CP PP < <(/usr/bin/python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
D=$(mktemp -d /tmp/ketch-corrupt-stall.XXXXXX)
trap 'rm -rf "$D"' EXIT
ARGS=(--name m --data-dir "$D/data" --listen-client-urls "http://127.0.0.1:$CP"
      --advertise-client-urls "http://127.0.0.1:$CP" --listen-peer-urls "http://127.0.0.1:$PP"
      --initial-advertise-peer-urls "http://127.0.0.1:$PP" --initial-cluster "m=http://127.0.0.1:$PP")
run() { # extra flags...
    "$KETCH" "${ARGS[@]}" "$@" >>"$D/log" 2>&1 &
    local pid=$!
    "$BENCH" ready --endpoints "127.0.0.1:$CP" --timeout 20 >/dev/null
    if [ "$loaded" = 0 ]; then
        "$BENCH" put --endpoints "127.0.0.1:$CP" --total "$KEYS" --key-space-size "$KEYS" \
            --sequential-keys --val-size 1024 --clients 64 --conns 4 >/dev/null 2>&1
        loaded=1
    else
        printf '%-40s ' "${*:-no check}"
        "$BENCH" put --endpoints "127.0.0.1:$CP" --duration "$DURATION" --total 0 --clients 1 \
            --key-space-size 1000 --json 2>/dev/null | /usr/bin/python3 -c 'import json, sys
l = json.load(sys.stdin)["latency"]
print("p50 %.2f ms  p99 %.2f ms  max %.1f ms  %d puts/s" % (
    l["p50_ms"], l["p99_ms"], l["max_ms"], l["throughput"]))'
    fi
    kill "$pid"
    wait "$pid" || true
}
loaded=0
run
run
run --experimental-corrupt-check-time 1s
echo "store: $(du -sh "$D/data/member/kv" | cut -f1)"
