#!/usr/bin/env bash
# Start-up time and memory with a big database (issue 6): for real etcd and
# for ketch in turn, load N keys of 256-byte values (default 1,000,000) into
# a fresh data dir, stop the server (SIGTERM), start it again and measure
# the time from exec to the first successful Range, the RSS once ready, the
# peak RSS during the load and the data dir's size on disk.
#
#   scripts/bigdb.sh              # N=1000000
#   N=200000 scripts/bigdb.sh
#
# Env: BENCH (default build/ketch-bench), ETCD (/usr/bin/etcd), KETCH
# (build/ketch), PORT (default 23990; peer PORT+10), N, ONLY (etcd or ketch).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-build/ketch-bench}
ETCD=${ETCD:-/usr/bin/etcd}
KETCH=${KETCH:-build/ketch}
PORT=${PORT:-23990}
PPORT=$((PORT + 10))
N=${N:-1000000}
EP=127.0.0.1:$PORT
PID=

stop() { if [[ -n $PID ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi; PID=; }
trap stop EXIT

start() { # start NAME BIN DIR -> sets PID and STARTUP_MS (exec to ready)
    local t0 t1
    t0=$(date +%s%N)
    "$2" --name "$1" --data-dir "$3" --listen-client-urls "http://$EP" --advertise-client-urls "http://$EP" \
        --listen-peer-urls "http://127.0.0.1:$PPORT" --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" \
        --initial-cluster "$1=http://127.0.0.1:$PPORT" --quota-backend-bytes 8589934592 >>"$3.log" 2>&1 &
    PID=$!
    "$BENCH" ready --endpoints "$EP" --timeout 120 >/dev/null 2>&1
    t1=$(date +%s%N)
    STARTUP_MS=$(((t1 - t0) / 1000000))
}

kb() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

# sample PID OUT: the highest RssAnon and RssFile seen (every 0.2 s) until PID exits
# or OUT.stop exists; VmHWM is the peak of their sum, which the kernel keeps
sample() {
    local a=0 f=0 x y
    while kill -0 "$1" 2>/dev/null && [[ ! -e $2.stop ]]; do
        x=$(kb "$1" RssAnon 2>/dev/null || echo 0); y=$(kb "$1" RssFile 2>/dev/null || echo 0)
        ((${x:-0} > a)) && a=$x; ((${y:-0} > f)) && f=$y
        echo "$a $f" >"$2"
        sleep 0.2
    done
}

printf '| server | keys | load s | peak RSS during load MiB | peak RssAnon MiB | peak RssFile MiB | data on disk MiB | start-up ms | RSS when ready MiB |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for name in ${ONLY:-etcd ketch}; do
    bin=$ETCD; [[ $name == ketch ]] && bin=$KETCH
    dir=$(mktemp -d "/tmp/ketch-bigdb-$name.XXXXXX")
    start "$name" "$bin" "$dir/data"
    sample "$PID" "$dir/peaks" &
    SPID=$!
    t0=$(date +%s)
    "$BENCH" put --endpoints "$EP" --total "$N" --clients 100 --conns 10 --key-prefix big/ \
        --sequential-keys --key-space-size "$N" --val-size 256 >/dev/null 2>&1
    load_s=$(($(date +%s) - t0))
    hwm=$(kb "$PID" VmHWM)
    touch "$dir/peaks.stop"; wait "$SPID" || true
    read -r panon pfile <"$dir/peaks"
    stop
    disk=$(du -s --block-size=1M "$dir/data" | cut -f1)
    start "$name" "$bin" "$dir/data"
    rss=$(kb "$PID" VmRSS)
    stop
    printf '| %s | %d | %d | %d | %d | %d | %d | %d | %d |\n' "$name" "$N" "$load_s" $((hwm / 1024)) \
        $((panon / 1024)) $((pfile / 1024)) "$disk" "$STARTUP_MS" $((rss / 1024))
    rm -rf "$dir"
done
