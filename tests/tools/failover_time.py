#!/usr/bin/python3
"""Time from kill -9 of the leader to the first acknowledged write, for a
3-member ketch cluster and a 3-member real etcd on the same machine
(docs/performance.md).  A client writes through a follower that survives
(ATTEMPT seconds per attempt, retried at once on an error); the figure is the time from the kill
to the response of the first write sent after it that succeeds.

Usage: /usr/bin/python3 tests/tools/failover_time.py [trials [attempt-seconds]]
(default 5 trials, 10 s per attempt: a write that reached the dead leader
waits its request timeout; a short attempt, e.g. 0.25, measures when a
retrying client gets through)
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import ETCD, ClusterMember, server_under_test_binary  # noqa: E402

import grpc  # noqa: E402
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402


ATTEMPT = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0


def status(m):
    ch = grpc.insecure_channel(m.endpoint)
    try:
        return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=2)
    finally:
        ch.close()


def leader(ms):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            sts = [status(m) for m in ms]
            lids = {s.leader for s in sts}
            if len(lids) == 1 and 0 not in lids:
                lid = lids.pop()
                return next(m for m, s in zip(ms, sts) if s.header.member_id == lid)
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    raise RuntimeError("no leader")


def trial(binary, tmpfs):
    ms = [ClusterMember("m%d" % (i + 1), "fo-m%d" % (i + 1), binary=binary, tmpfs=tmpfs)
          for i in range(3)]
    ic = ",".join("%s=%s" % (m.name, m.peer_url) for m in ms)
    for m in ms:
        m.initial_cluster = ic
        m.start(wait=False)
    try:
        for m in ms:
            m.wait_ready(timeout=30)
        ld = leader(ms)
        f = next(m for m in ms if m is not ld)
        ch = grpc.insecure_channel(f.endpoint)
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(20):
            kv.Put(rpc_pb2.PutRequest(key=b"warm", value=b"%d" % i), timeout=5)
        t_kill = time.monotonic()
        ld.kill()
        while True:
            try:
                kv.Put(rpc_pb2.PutRequest(key=b"after", value=b"x"), timeout=ATTEMPT)
                break
            except grpc.RpcError:
                if time.monotonic() - t_kill > 60:
                    raise
        dt = time.monotonic() - t_kill
        ch.close()
        return dt
    finally:
        for m in ms:
            m.cleanup()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    for label, binary, tmpfs in (("ketch", server_under_test_binary(), False),
                                 ("etcd", ETCD, True)):
        xs = [trial(binary, tmpfs) for _ in range(n)]
        print("%-6s kill -9 leader -> first acknowledged write: median %.2f s, min %.2f s, "
              "max %.2f s over %d trials, %.2f s per attempt (%s)" % (label, statistics.median(xs), min(xs), max(xs),
                                                 n, ATTEMPT, ", ".join("%.2f" % x for x in xs)),
              flush=True)


if __name__ == "__main__":
    main()
