#!/usr/bin/env bash
# 3-member clusters of real etcd and of ketch on 127.0.0.1, one after the
# other, measured by the same client: ketch-bench put and range (linearizable)
# spread over the three members, then the time from kill -9 of the leader to
# the first successful write through a surviving member (etcdctl put retried
# with a 1 s command timeout; the figure includes etcdctl's start-up, ~20 ms).
#
#   scripts/cluster-bench.sh               # TOTAL=20000
#   ONLY=ketch TOTAL=5000 scripts/cluster-bench.sh
#
# Env: BENCH (build/ketch-bench), ETCD (/usr/bin/etcd), KETCH (build/ketch),
# PORT (first client port, default 24790; member i uses PORT+i and PORT+10+i).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-build/ketch-bench}
ETCD=${ETCD:-/usr/bin/etcd}
KETCH=${KETCH:-build/ketch}
PORT=${PORT:-24790}
TOTAL=${TOTAL:-20000}
ONLY=${ONLY:-}
OUT=${OUT:-$(mktemp -d /tmp/ketch-cluster-bench.XXXXXX)}
LOAD="--clients 100 --conns 12"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [[ -n $p ]] && kill -9 "$p" 2>/dev/null || true; done; PIDS=(); }
trap cleanup EXIT

run() {
    local name=$1 bin=$2 dir ic="" eps=""
    dir=$(mktemp -d "/tmp/ketch-cluster-$name.XXXXXX")
    for i in 1 2 3; do
        ic+="${ic:+,}m$i=http://127.0.0.1:$((PORT + 10 + i))"
        eps+="${eps:+,}127.0.0.1:$((PORT + i))"
    done
    for i in 1 2 3; do
        "$bin" --name "m$i" --data-dir "$dir/m$i" \
            --listen-client-urls "http://127.0.0.1:$((PORT + i))" \
            --advertise-client-urls "http://127.0.0.1:$((PORT + i))" \
            --listen-peer-urls "http://127.0.0.1:$((PORT + 10 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((PORT + 10 + i))" \
            --initial-cluster "$ic" --initial-cluster-token bench >"$OUT/$name.m$i.log" 2>&1 &
        PIDS[$i]=$!
    done
    for i in 1 2 3; do "$BENCH" ready --endpoints "127.0.0.1:$((PORT + i))" --timeout 30 >/dev/null; done
    echo "== $name: 3 members, data in $dir" >&2
    # shellcheck disable=SC2086
    "$BENCH" put --total "$TOTAL" $LOAD --key-prefix bench/ --sequential-keys --key-space-size 100000 \
        --val-size 256 --endpoints "$eps" --json >"$OUT/$name.put.json"
    # shellcheck disable=SC2086
    "$BENCH" range bench/ bench0 --limit 10 --total "$TOTAL" $LOAD --endpoints "$eps" --json \
        >"$OUT/$name.range.json"
    # leader kill -9 -> first successful write
    local leader survivor t0 t1
    leader=$(ETCDCTL_API=3 etcdctl --endpoints="$eps" endpoint status -w json |
        python3 -c 'import json,sys; s=json.load(sys.stdin); print([i for i,x in enumerate(s) if x["Status"]["leader"]==x["Status"]["header"]["member_id"]][0]+1)')
    survivor=$((leader % 3 + 1))
    t0=$(date +%s%N)
    kill -9 "${PIDS[$leader]}"
    until ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$((PORT + survivor))" --command-timeout=1s \
        put after-kill x >/dev/null 2>&1; do :; done
    t1=$(date +%s%N)
    echo "{\"failover_ms\": $(((t1 - t0) / 1000000))}" >"$OUT/$name.failover.json"
    cleanup
    rm -rf "$dir"
}

[[ -z $ONLY || $ONLY == etcd ]] && run etcd "$ETCD"
[[ -z $ONLY || $ONLY == ketch ]] && run ketch "$KETCH"

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(n):
    try:
        with open(os.path.join(out, n)) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except Exception:
        return None
print("| 3 members | etcd | ketch |")
print("|---|---|---|")
for w in ("put", "range"):
    e, k = load("etcd.%s.json" % w), load("ketch.%s.json" % w)
    f = lambda d: "-" if not d else "%.0f req/s, p99 %.2f ms" % (d["throughput"], d["latency"]["p99_ms"])
    print("| %s | %s | %s |" % (w, f(e), f(k)))
e, k = load("etcd.failover.json"), load("ketch.failover.json")
g = lambda d: "-" if not d else "%d ms" % d["failover_ms"]
print("| leader kill -9 -> first write | %s | %s |" % (g(e), g(k)))
print("(raw results in %s)" % out)
PY
