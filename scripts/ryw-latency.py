"""Put, then at once a serializable get of the same key, N times, on one
endpoint (a follower: scripts/ryw-bench.sh runs it); prints percentiles of
both and how many gets missed their put (stale).
Usage: /usr/bin/python3 scripts/ryw-latency.py HOST:PORT N"""
import os
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import grpc
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
ep = sys.argv[1]; n = int(sys.argv[2])
ch = grpc.insecure_channel(ep); k = rpc_pb2_grpc.KVStub(ch)
lat = []; wl = []; stale = 0
for i in range(n):
    t0 = time.monotonic()
    k.Put(rpc_pb2.PutRequest(key=b"l%d" % (i % 10), value=b"%d" % i), timeout=10)
    t1 = time.monotonic()
    r = k.Range(rpc_pb2.RangeRequest(key=b"l%d" % (i % 10), serializable=True), timeout=10)
    t2 = time.monotonic()
    stale += not r.kvs or r.kvs[0].value != b"%d" % i
    wl.append(t1 - t0); lat.append(t2 - t1)
lat.sort(); wl.sort()
f = lambda a, q: "%.2f" % (a[int(q * (len(a) - 1))] * 1000)
print("put ms p50 %s p90 %s p99 %s max %s | get ms p50 %s p90 %s p99 %s max %s | gets > 20 ms: %d | stale gets: %d" % (
    f(wl, .5), f(wl, .9), f(wl, .99), f(wl, 1), f(lat, .5), f(lat, .9), f(lat, .99), f(lat, 1), sum(x > .02 for x in lat), stale))
