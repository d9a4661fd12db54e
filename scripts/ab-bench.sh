#!/bin/bash
# Before/after comparisons on a busy machine: two ketch binaries run
# alternately, round after round, with real etcd in every round
# (docs/performance.md, "2026-12-03 session 2").
#
#   BEFORE=/tmp/perf-before/ketch AFTER=build/ketch scripts/ab-bench.sh cluster 3
#   BEFORE=... AFTER=... scripts/ab-bench.sh single 2
#   BEFORE=... AFTER=... scripts/ab-bench.sh cpu 3
#
# cluster: scripts/peer-bench.sh (3 members, cleartext peers; puts against
#          the leader and a follower, the members' CPU per put) for before,
#          after, etcd, on base port PORT (default 47300).
# single:  scripts/compare.sh (etcd and ketch, one member each) with
#          WORKLOADS (default "put put-256B-100k-keys range-key-l range-key-s")
#          for before, then after, on PORT+100.
# cpu:     one member, 40,000 puts of 256 B over 100,000 keys; the server's
#          user + system time per put (from /proc/PID/stat), before then after.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?cluster|single|cpu}; ROUNDS=${2:-3}
BEFORE=${BEFORE:?before binary}; AFTER=${AFTER:-build/ketch}
BENCH=${BENCH:-build/ketch-bench}; ETCD=${ETCD:-/usr/bin/etcd}
PORT=${PORT:-47300}
TCK=$(getconf CLK_TCK)
cpu_run() { # cpu_run LABEL BIN
    local D P c0 c1 out ep=127.0.0.1:$((PORT + 200)) pp=127.0.0.1:$((PORT + 210))
    D=$(mktemp -d /tmp/ketch-ab.XXXXXX)
    "$2" --name m --data-dir "$D/m" --listen-client-urls "http://$ep" --advertise-client-urls "http://$ep" \
        --listen-peer-urls "http://$pp" --initial-advertise-peer-urls "http://$pp" \
        --initial-cluster "m=http://$pp" >"$D/log" 2>&1 &
    P=$!
    "$BENCH" ready --endpoints "$ep" --timeout 20 >/dev/null 2>&1
    c0=$(awk '{print $14 + $15}' /proc/$P/stat)
    out=$("$BENCH" put --endpoints "$ep" --total 40000 --clients 100 --conns 10 --key-prefix bench/ \
        --sequential-keys --key-space-size 100000 --val-size 256 2>&1 | grep "Requests/sec" | tr -s '\t ' ' ')
    c1=$(awk '{print $14 + $15}' /proc/$P/stat)
    echo "$1:$out; server CPU $(((c1 - c0) * 1000 / TCK)) ms for 40000 puts ($(((c1 - c0) * 1000000 / TCK / 40000)) us per put)"
    kill $P; wait $P 2>/dev/null; rm -rf "$D"
}
for r in $(seq 1 "$ROUNDS"); do
    case $MODE in
    cluster)
        for v in before after etcd; do
            b=$BEFORE; [ $v = after ] && b=$AFTER; [ $v = etcd ] && b=$ETCD
            echo "##### round $r $v (3 members)"
            BENCH=$BENCH bash scripts/peer-bench.sh "$b" plain "$PORT"
        done ;;
    single)
        for v in before after; do
            b=$BEFORE; [ $v = after ] && b=$AFTER
            echo "##### round $r $v (one member, etcd in the same run)"
            PORT=$((PORT + 100)) BENCH=$BENCH KETCH=$b \
                WORKLOADS=${WORKLOADS:-"put put-256B-100k-keys range-key-l range-key-s"} bash scripts/compare.sh
        done ;;
    cpu)
        cpu_run "round $r before" "$BEFORE"
        cpu_run "round $r after" "$AFTER" ;;
    esac
done
