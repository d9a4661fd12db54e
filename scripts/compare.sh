#!/usr/bin/env bash
# Runs the same ketch-bench workloads against real etcd and against ketch,
# one server at a time, each with a fresh data dir on 127.0.0.1, and prints
# one table: throughput and p99 of both and the ratio ketch/etcd, plus peak
# RSS (VmHWM), data size on disk after the load, and start-up time (process
# start to the first successful Range).
#
#   scripts/compare.sh                 # default sizes (TOTAL=20000)
#   TOTAL=5000 scripts/compare.sh      # smaller
#   ONLY=etcd scripts/compare.sh       # one server (etcd or ketch)
#   WORKLOADS="put range-l" scripts/compare.sh
#
# Env: BENCH (ketch-bench binary), ETCD (/usr/bin/etcd), KETCH (build/ketch), ETCDCTL,
# PORT (client port, default 23790; peer port PORT+10), OUT (results dir).
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH=${BENCH:-}
if [[ -z $BENCH ]]; then
    for b in build/ketch-bench build-bench/ketch-bench; do
        [[ -x $b ]] && { BENCH=$b; break; }
    done
fi
[[ -x ${BENCH:-} ]] || { echo "compare.sh: no ketch-bench binary (make build/ketch-bench, or set BENCH)" >&2; exit 1; }
ETCD=${ETCD:-/usr/bin/etcd}
KETCH=${KETCH:-build/ketch}
ETCDCTL=${ETCDCTL:-/usr/bin/etcdctl}
PORT=${PORT:-23790}
PPORT=$((PORT + 10))
TOTAL=${TOTAL:-20000}
HALF=$((TOTAL / 2))
ONLY=${ONLY:-}
OUT=${OUT:-$(mktemp -d /tmp/ketch-compare.XXXXXX)}
mkdir -p "$OUT"
EP=127.0.0.1:$PORT
LOAD="--clients 100 --conns 10"

# name | ketch-bench arguments (the endpoint is added)
declare -A ARGS=(
    [put]="put --total $TOTAL $LOAD"
    [put-256B-100k-keys]="put --total $TOTAL $LOAD --key-prefix bench/ --sequential-keys --key-space-size 100000 --val-size 256"
    [range-l]="range bench/ bench0 --limit 10 --total $TOTAL $LOAD"
    [range-s]="range bench/ bench0 --limit 10 --consistency s --total $TOTAL $LOAD"
    [range-key-l]="range onekey --total $((TOTAL * 2)) $LOAD"
    [range-key-s]="range onekey --consistency s --total $((TOTAL * 2)) $LOAD"
    [txn-put]="txn-put --total $HALF --txn-ops 4 --key-space-size 100000 $LOAD"
    [txn-mixed]="txn-mixed --total $TOTAL --rw-ratio 4 --key-space-size 1000 $LOAD"
    [watch-latency]="watch-latency --put-total 1000 --put-rate 200 --streams 10 --watchers-per-stream 10 --conns 2"
    [k8s]="k8s --objects 2000 --total $HALF --clients 50 --conns 5"
)
ORDER=${WORKLOADS:-"put put-256B-100k-keys range-l range-s range-key-l range-key-s txn-put txn-mixed watch-latency k8s"}

SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# run_server NAME BINARY
run_server() {
    local name=$1 bin=$2 dir
    dir=$(mktemp -d "/tmp/ketch-compare-$name.XXXXXX")
    echo "== $name ($bin), data in $dir, results in $OUT" >&2
    local t0 t1
    t0=$(date +%s%N)
    "$bin" --name "$name" --data-dir "$dir/data" \
        --listen-client-urls "http://$EP" --advertise-client-urls "http://$EP" \
        --listen-peer-urls "http://127.0.0.1:$PPORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" \
        --initial-cluster "$name=http://127.0.0.1:$PPORT" >"$OUT/$name.log" 2>&1 &
    SERVER_PID=$!
    if ! "$BENCH" ready --endpoints "$EP" --timeout 20 2>>"$OUT/$name.ready.err"; then
        echo "compare.sh: SKIPPING $name: it did not answer on $EP within 20 s." >&2
        echo "  last lines of $OUT/$name.log:" >&2
        tail -n 5 "$OUT/$name.log" | sed 's/^/    /' >&2
        echo "{\"skipped\":\"did not start\"}" >"$OUT/$name.server.json"
        cleanup; SERVER_PID=
        rm -rf "$dir"
        return 0
    fi
    t1=$(date +%s%N)
    local startup_ms=$(((t1 - t0) / 1000000))
    for w in $ORDER; do
        echo "-- $name $w: ketch-bench ${ARGS[$w]} --endpoints $EP" >&2
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "{\"failed\":\"server exited\"}" >"$OUT/$name.$w.json"; continue
        fi
        # range-key-*: issue 6's "range of one key": one 256-byte value under "onekey"
        if [[ $w == range-key-* ]]; then
            "$ETCDCTL" --endpoints "$EP" put onekey "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null
        fi
        # shellcheck disable=SC2086
        if ! timeout 300 "$BENCH" ${ARGS[$w]} --endpoints "$EP" --json >"$OUT/$name.$w.json" 2>"$OUT/$name.$w.err"; then
            echo "   failed: $(tail -n 1 "$OUT/$name.$w.err")" >&2
            echo "{\"failed\":$(tail -n 1 "$OUT/$name.$w.err" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')}" >"$OUT/$name.$w.json"
        fi
    done
    local hwm db total
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
    total=$(du -sb "$dir/data" | cut -f1)
    db=0
    [[ -f $dir/data/member/snap/db ]] && db=$(stat -c %s "$dir/data/member/snap/db")
    printf '{"startup_ms":%d,"vmhwm_kb":%s,"data_bytes":%s,"db_bytes":%s}\n' \
        "$startup_ms" "${hwm:-0}" "$total" "$db" >"$OUT/$name.server.json"
    cleanup; SERVER_PID=
    rm -rf "$dir"
}

if [[ -z $ONLY || $ONLY == etcd ]]; then
    if [[ -x $ETCD ]]; then run_server etcd "$ETCD"; else echo "compare.sh: no $ETCD, skipping etcd" >&2; fi
fi
if [[ -z $ONLY || $ONLY == ketch ]]; then
    if [[ -x $KETCH ]]; then run_server ketch "$KETCH"; else echo "compare.sh: SKIPPING ketch: $KETCH not built" >&2; fi
fi

python3 - "$OUT" $ORDER <<'PY'
import json, os, sys
out, order = sys.argv[1], sys.argv[2:]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except Exception:
        return None
def fig(d, key):
    if d is None: return None
    if "failed" in d or "skipped" in d: return None
    if d.get("workload") == "watch-latency":
        op = d["ops"].get("watch", {})
        return op.get("throughput") if key == "tput" else op.get("p99_ms")
    return d["throughput"] if key == "tput" else d["latency"]["p99_ms"]
def cell(v, fmt):
    return "pending" if v is None else fmt % v
def ratio(k, e):
    return "-" if (k is None or e is None or e == 0) else "%.2f" % (k / e)
notes = []
rows = [("workload", "etcd req/s", "ketch req/s", "ketch/etcd", "etcd p99 ms", "ketch p99 ms", "ketch/etcd")]
for w in order:
    e, k = load(f"etcd.{w}.json"), load(f"ketch.{w}.json")
    et, kt, ep, kp = fig(e, "tput"), fig(k, "tput"), fig(e, "p99"), fig(k, "p99")
    name = w + (" (events/s, event p99)" if w == "watch-latency" else "")
    for tag, d in (("etcd", e), ("ketch", k)):
        if d and d.get("errors"):
            notes.append(f"{w}: {tag}: {d['errors']} errors: " + "; ".join(
                f"{x['count']} x status {x['status']} {x['message']}" for x in d.get("error_summary", [])))
            name += " *"
        if d and d.get("failed"):
            notes.append(f"{w}: {tag} failed: {d['failed']}")
            name += " *"
    rows.append((name, cell(et, "%.0f"), cell(kt, "%.0f"), ratio(kt, et), cell(ep, "%.2f"), cell(kp, "%.2f"), ratio(kp, ep)))
es, ks = load("etcd.server.json"), load("ketch.server.json")
def srv(d, key, scale, fmt):
    if not d or key not in d: return None
    return d[key] / scale
for label, key, scale in (("peak RSS MiB (VmHWM)", "vmhwm_kb", 1024), ("data dir MiB after load", "data_bytes", 1 << 20),
                          ("start-up ms (exec to first Range)", "startup_ms", 1)):
    ev, kv = srv(es, key, scale, ""), srv(ks, key, scale, "")
    rows.append((label, cell(ev, "%.1f"), cell(kv, "%.1f"), ratio(kv, ev), "", "", ""))
if es and es.get("db_bytes"):
    rows.append(("etcd bbolt db MiB", "%.1f" % (es["db_bytes"] / (1 << 20)), "", "", "", "", ""))
w = [max(len(r[i]) for r in rows) for i in range(7)]
for i, r in enumerate(rows):
    print("| " + " | ".join(c.ljust(w[j]) for j, c in enumerate(r)) + " |")
    if i == 0: print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for n in notes:
    print("* " + n)
if ks and ks.get("skipped"):
    print("\nketch: skipped (%s); see %s/ketch.log" % (ks["skipped"], out))
print("\nraw results: %s" % out)
PY
