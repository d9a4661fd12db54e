#!/bin/bash
# Cluster writes at several client counts (docs/performance.md, "2026-12-03
# session 2: cluster writes"): a fresh 3-member cluster of BIN (ketch or
# etcd: same flags) with cleartext peers on 127.0.0.1, then for each client
# count puts against the leader and against a follower (forwarded), with
# the three members' CPU time per put, and for ketch the leader's entries
# per raft append and mean append → apply time (ketch_server_proposal_*
# in /metrics).
#
#   BENCH=build/ketch-bench scripts/cluster-writes.sh BIN BASEPORT ["1 16 64 256"]
#
# Each run: put --conns min(clients,4) --clients N --total clamp(200 N,
# 2000, 20000) --key-space-size 10000 (8-byte keys and values).
BIN=$1; BP=$2; CL=${3:-"1 16 64 256"}; B=${BENCH:-build/ketch-bench}
D=$(mktemp -d /tmp/ketch-cluster-writes.XXXXXX)
IC=""; for i in 1 2 3; do IC="$IC${IC:+,}m$i=http://127.0.0.1:$((BP+i*10+1))"; done
PIDS=()
for i in 1 2 3; do
  "$BIN" --name m$i --data-dir $D/m$i --listen-client-urls http://127.0.0.1:$((BP+i*10)) \
    --advertise-client-urls http://127.0.0.1:$((BP+i*10)) \
    --listen-peer-urls http://127.0.0.1:$((BP+i*10+1)) --initial-advertise-peer-urls http://127.0.0.1:$((BP+i*10+1)) \
    --initial-cluster $IC --initial-cluster-token b > $D/m$i.log 2>&1 &
  PIDS+=($!)
done
sleep 3
for i in 1 2 3; do $B ready --endpoints 127.0.0.1:$((BP+i*10)) --timeout 20 >/dev/null 2>&1; done
LEP=""; FEP=""
for i in 1 2 3; do
  isl=$(ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:$((BP+i*10)) endpoint status -w json |
        python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; print(s["leader"]==s["header"]["member_id"])')
  if [ "$isl" = True ]; then LEP=127.0.0.1:$((BP+i*10)); else FEP=127.0.0.1:$((BP+i*10)); fi
done
cpu() { local t=0 p; for p in ${PIDS[@]}; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }
# ketch only: entries proposed and raft appends on the leader, append→apply sum and count
stats() { curl -s http://$LEP/metrics | awk '/^ketch_server_propos/ {printf "%s ", $2}'; }
TCK=$(getconf CLK_TCK)
for c in $CL; do
  tot=$((c * 200)); [ $tot -gt 20000 ] && tot=20000; [ $tot -lt 2000 ] && tot=2000
  conns=$((c < 4 ? c : 4))
  for role in leader follower; do
    EP=$LEP; [ $role = follower ] && EP=$FEP
    c0=$(cpu); s0=$(stats)
    r=$($B put --endpoints $EP --conns $conns --clients $c --total $tot --key-space-size 10000 2>&1 |
        grep -E "Requests/sec|99% in" | tr -s ' \t' ' ' | tr '\n' ' ')
    c1=$(cpu); s1=$(stats)
    extra=""
    if [ -n "$s1" ]; then
      extra=$(echo "$s0 $s1" | awk '{n=$5-$1; a=$6-$2; if (a > 0 && $8 > $4) printf "entries/append %.1f, append->apply %.2f ms", n/a, 1000*($7-$3)/($8-$4)}')
    fi
    echo "$(basename $BIN) clients=$c $role:$r members' CPU/put $(((c1 - c0) * 1000000 / TCK / tot)) us $extra"
  done
done
kill ${PIDS[@]}; wait; rm -rf "$D"
