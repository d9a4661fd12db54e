#!/bin/bash
# Follower read-your-writes figures (docs/performance.md, "Read-your-writes
# on a follower"): a 3-member cluster (cleartext peers), every request sent
# to a follower:
#   put         --conns 4 --clients 64 --total 10000 (forwarded writes)
#   mixed-s     txn-mixed --consistency s --rw-ratio 1, 64 clients: each
#               serializable read may wait for the writes answered before it
#   mixed-s-1   the same with one client: write, then read, in turn (the
#               read waits for the follower to learn that the write committed)
#   range-s     range --consistency s, 64 clients (nothing to wait for)
#   put-then-get scripts/ryw-latency.py: 500 x (put, serializable get),
#               percentiles of each (python gRPC client, one at a time)
# Usage: scripts/ryw-bench.sh BIN BASEPORT   (BIN may be /usr/bin/etcd)
BIN=$1; BP=$2; D=$(mktemp -d /tmp/ketch-ryw-bench.XXXXXX)
IC=""
for i in 1 2 3; do IC="$IC${IC:+,}m$i=http://127.0.0.1:$((BP+i*10+1))"; done
PIDS=()
for i in 1 2 3; do
  $BIN --name m$i --data-dir $D/m$i --listen-client-urls http://127.0.0.1:$((BP+i*10)) --advertise-client-urls http://127.0.0.1:$((BP+i*10)) \
    --listen-peer-urls http://127.0.0.1:$((BP+i*10+1)) --initial-advertise-peer-urls http://127.0.0.1:$((BP+i*10+1)) \
    --initial-cluster $IC --initial-cluster-token b > $D/m$i.log 2>&1 &
  PIDS+=($!)
done
B=${BENCH:-build/ketch-bench}
for i in 1 2 3; do $B ready --endpoints 127.0.0.1:$((BP+i*10)) --timeout 20 >/dev/null; done
sleep 2
FEP=""
for i in 1 2 3; do
  isl=$(ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:$((BP+i*10)) endpoint status -w json | python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; print(s["leader"]==s["header"]["member_id"])')
  [ "$isl" = True ] || FEP=127.0.0.1:$((BP+i*10))
done
run() { echo "== $1"; shift; $B "$@" --endpoints $FEP --key-space-size 10000 2>&1 | grep -E "Requests/sec|Average|99% in|^ *(read|write)"; }
run put put --conns 4 --clients 64 --total 10000
run mixed-s txn-mixed --consistency s --rw-ratio 1 --conns 4 --clients 64 --total 10000
run mixed-s-1 txn-mixed --consistency s --rw-ratio 1 --clients 1 --total 400
run range-s range 00 --consistency s --conns 4 --clients 64 --total 20000
echo "== put-then-get"; /usr/bin/python3 "$(dirname "$0")/ryw-latency.py" $FEP ${N:-500}
kill ${PIDS[@]}; wait; rm -rf "$D"
