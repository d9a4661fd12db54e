#!/bin/bash
# Peer transport figures (docs/performance.md, "Peer TLS"): a 3-member cluster
# with cleartext or TLS peers, put throughput against the leader and a
# follower (forwarded), and the CPU time the three members spent on each
# (the figure that shows a relay's cost on a busy machine). Usage: scripts/peer-bench.sh BIN plain|tls BASEPORT
# (certificates in /tmp/peerbench/certs: ca.pem, m.pem, m.key with SAN
# IP:127.0.0.1, serverAuth+clientAuth).
BIN=$1; MODE=$2; BP=$3; D=$(mktemp -d /tmp/ketch-peer-bench.XXXXXX); rm -rf $D; mkdir -p $D
C=${CERTS:-/tmp/peerbench/certs}
S=http; EXTRA=()
if [ $MODE = tls ]; then S=https; fi
IC=""
for i in 1 2 3; do IC="$IC${IC:+,}m$i=$S://127.0.0.1:$((BP+i*10+1))"; done
PIDS=()
for i in 1 2 3; do
  if [ $MODE = tls ]; then EXTRA=(--peer-cert-file $C/m.pem --peer-key-file $C/m.key --peer-trusted-ca-file $C/ca.pem --peer-client-cert-auth); fi
  $BIN --name m$i --data-dir $D/m$i --listen-client-urls http://127.0.0.1:$((BP+i*10)) --advertise-client-urls http://127.0.0.1:$((BP+i*10)) \
    --listen-peer-urls $S://127.0.0.1:$((BP+i*10+1)) --initial-advertise-peer-urls $S://127.0.0.1:$((BP+i*10+1)) \
    --initial-cluster $IC --initial-cluster-token b "${EXTRA[@]}" > $D/m$i.log 2>&1 &
  PIDS+=($!)
done
sleep 3
B=${BENCH:-build/ketch-bench}
for i in 1 2 3; do $B ready --endpoints 127.0.0.1:$((BP+i*10)) --timeout 20 >/dev/null; done
# pick leader and a follower endpoint
LEP=""; FEP=""
for i in 1 2 3; do
  isl=$(ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:$((BP+i*10)) endpoint status -w json | python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; print(s["leader"]==s["header"]["member_id"])')
  if [ "$isl" = True ]; then LEP=127.0.0.1:$((BP+i*10)); else FEP=127.0.0.1:$((BP+i*10)); fi
done
# CPU time (user + system, clock ticks) of the three members together
cpu() { local t=0 p; for p in ${PIDS[@]}; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }
TCK=$(getconf CLK_TCK)
for role in leader follower; do
  EP=$LEP; [ $role = follower ] && EP=$FEP
  c0=$(cpu)
  echo "== $MODE $role"; $B put --endpoints $EP --conns 4 --clients 64 --total 20000 --key-space-size 10000 2>&1 | grep -iE "Requests/sec|Requests:|99% in"
  c1=$(cpu)
  echo "  members' CPU: $(( (c1 - c0) * 1000 / TCK )) ms for 20000 puts ($(( (c1 - c0) * 1000000 / TCK / 20000 )) us per put)"
done
kill ${PIDS[@]}; wait; rm -rf "$D"
