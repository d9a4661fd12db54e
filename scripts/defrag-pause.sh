#!/usr/bin/env bash
# Longest request pause caused by Defragment under a write load, ketch vs
# etcd, measured by the same client (ketch-bench) on 127.0.0.1.
#
# For each server, on a fresh data dir: LIVE keys of 1 KiB that stay, JUNK
# keys of 1 KiB that are deleted and compacted away (so defrag has free
# pages to return and live pages to copy); then two runs of the same put
# load (50 clients, 5 connections, 256-byte values) for DURATION seconds each: one
# without defrag (baseline) and one with `etcdctl defrag` after 2 s.
# Prints the max and p99 latency of both runs, the defrag's wall time and
# the file size before and after; ketch's log line with its swap pause.
#
#   scripts/defrag-pause.sh                    # LIVE=50000 JUNK=100000 DURATION=8
#   ONLY=ketch LIVE=200000 scripts/defrag-pause.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-build/ketch-bench}
KETCH=${KETCH:-build/ketch}
ETCD=${ETCD:-/usr/bin/etcd}
PORT=${PORT:-41041}
LIVE=${LIVE:-50000}
JUNK=${JUNK:-100000}
DURATION=${DURATION:-8}
ONLY=${ONLY:-}
EP=127.0.0.1:$PORT
export ETCDCTL_API=3
E="etcdctl --endpoints=$EP --command-timeout=60s"

size() { $E endpoint status -w json | /usr/bin/python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["Status"]["dbSize"])'; }
lat() { /usr/bin/python3 -c 'import json,sys;d=json.load(open(sys.argv[1]));l=d["latency"];print("ok=%d errors=%d p99=%.1fms max=%.1fms"%(d["ok"],d["errors"],l["p99_ms"],l["max_ms"]))' "$1"; }

run() {
    local name=$1 bin=$2 dir
    dir=$(mktemp -d /tmp/ketch-defrag.XXXXXX)
    "$bin" --data-dir "$dir/data" --listen-client-urls "http://$EP" --advertise-client-urls "http://$EP" \
        --listen-peer-urls "http://127.0.0.1:$((PORT + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((PORT + 1))" \
        --initial-cluster "default=http://127.0.0.1:$((PORT + 1))" >"$dir/log" 2>&1 &
    local pid=$!
    "$BENCH" ready --endpoints "$EP" --timeout 20 >/dev/null 2>&1
    local load="--endpoints $EP --clients 50 --conns 5 --sequential-keys --json"
    "$BENCH" put $load --total "$LIVE" --key-prefix live/ --key-space-size "$LIVE" --val-size 1024 >/dev/null 2>&1
    "$BENCH" put $load --total "$JUNK" --key-prefix junk/ --key-space-size "$JUNK" --val-size 1024 >/dev/null 2>&1
    $E del --prefix junk/ >/dev/null
    local rev
    rev=$($E get x -w json | /usr/bin/python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
    $E compaction --physical "$rev" >/dev/null
    sleep 2
    "$BENCH" put $load --total 0 --duration "$DURATION" --key-prefix base/ --key-space-size 100000 --val-size 256 >"$dir/base.json" 2>/dev/null
    local before after t0 t1
    before=$(size)
    "$BENCH" put $load --total 0 --duration "$DURATION" --key-prefix load/ --key-space-size 100000 --val-size 256 >"$dir/load.json" 2>/dev/null &
    local bp=$!
    sleep 2
    t0=$(date +%s.%N)
    $E defrag >/dev/null
    t1=$(date +%s.%N)
    wait $bp
    after=$(size)
    echo "== $name"
    echo "   baseline run:     $(lat "$dir/base.json")"
    echo "   run with defrag:  $(lat "$dir/load.json")"
    echo "   defrag took $(/usr/bin/python3 -c "print('%.0f ms' % (($t1 - $t0) * 1000))"), file $before -> $after bytes"
    grep -h "defragmented" "$dir/log" | sed 's/^/   /' || true
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

[[ -z $ONLY || $ONLY == etcd ]] && run etcd "$ETCD"
[[ -z $ONLY || $ONLY == ketch ]] && run ketch "$KETCH"
