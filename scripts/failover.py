#!/usr/bin/python3
"""Time from kill -9 of the leader of a 3-member cluster to the first
successful write, measured by a client that is already connected to a
surviving member (python3-etcd3, one put after another, each with a
250 ms deadline, retried at once when it fails: etcd drops a proposal made
while there is no leader, and the put then only fails at its deadline, so
a long deadline would measure the deadline). Runs real etcd and ketch
the same way, TRIALS times each, on 127.0.0.1 (ports from the test harness),
default --heartbeat-interval 100 --election-timeout 1000.

    /usr/bin/python3 scripts/failover.py [TRIALS]     # default 5
    ONLY=ketch /usr/bin/python3 scripts/failover.py 10

Env: KETCH_BIN (build/ketch), ETCD (/usr/bin/etcd).
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import harness  # noqa: E402
import etcd3  # noqa: E402


class Req:
    def __init__(self):
        self.fins = []

    def addfinalizer(self, f):
        self.fins.append(f)

    def close(self):
        for f in reversed(self.fins):
            try:
                f()
            except Exception as e:  # noqa: BLE001
                print("cleanup:", e)


def trial(binary):
    req = Req()
    try:
        ms = harness.start_cluster(req, 3, binary=binary, label="failover")
        # which member leads: the one whose Status says it is its own leader
        leader = None
        deadline = time.monotonic() + 30
        while leader is None and time.monotonic() < deadline:
            for m in ms:
                from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
                ch = m.channel()
                try:
                    r = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=2)
                    if r.leader and r.leader == r.header.member_id:
                        leader = m
                except Exception:  # noqa: BLE001
                    pass
                finally:
                    ch.close()
            time.sleep(0.05)
        assert leader is not None, "no leader"
        other = [m for m in ms if m is not leader][0]
        c = etcd3.client(host="127.0.0.1", port=other.client_port, timeout=0.25)
        for i in range(20):
            c.put("warm%d" % i, "x")
        t0 = time.monotonic()
        leader.kill()
        tries = 0
        while True:
            tries += 1
            try:
                c.put("after", "x")
                break
            except Exception:  # noqa: BLE001
                if time.monotonic() - t0 > 60:
                    raise
        t1 = time.monotonic()
        c.close()
        return (t1 - t0) * 1000, tries
    finally:
        req.close()


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    only = os.environ.get("ONLY")
    systems = []
    if only in (None, "", "etcd"):
        systems.append(("etcd", os.environ.get("ETCD", harness.ETCD)))
    if only in (None, "", "ketch"):
        systems.append(("ketch", harness.server_under_test_binary()))
    for name, binary in systems:
        times = []
        for _ in range(trials):
            ms, tries = trial(binary)
            times.append(ms)
            print("%-5s leader kill -9 -> first write: %6.0f ms (%d puts)" % (name, ms, tries),
                  flush=True)
        print("%-5s %d trials: median %.0f ms, min %.0f, max %.0f" % (
            name, trials, statistics.median(times), min(times), max(times)), flush=True)


if __name__ == "__main__":
    main()
