#!/usr/bin/python3
"""A member catching up through a snapshot of the whole store: 3 ketch
members with --snapshot-count 100, one stopped, MB puts of 1 MiB values and
300 small ones on the leader, then the stopped member restarted. Prints the
time from its restart until it has applied the leader's revision, and the
peak anonymous memory (RssAnon, sampled every 10 ms) of the leader and of
the member meanwhile.

    /usr/bin/python3 scripts/catchup-bench.py [MB]      # default 150

Env: KETCH_BIN (build/ketch).
"""
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import harness  # noqa: E402
import etcd3  # noqa: E402
from test_cluster import count, leader_of  # noqa: E402


class Req:
    def __init__(self):
        self.fins = []

    def addfinalizer(self, f):
        self.fins.append(f)


def rss_anon_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon"):
                return int(line.split()[1])
    return 0


def main():
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    req = Req()
    try:
        ms = harness.start_cluster(req, 3, extra_args=["--snapshot-count", "100"],
                                   label="catchup-bench")
        leader = leader_of(ms)
        lag = [m for m in ms if m is not leader][0]
        lag.stop()
        c = etcd3.client(host="127.0.0.1", port=leader.client_port, timeout=30)
        v = os.urandom(1 << 20)
        for i in range(mb):
            c.put("big/%05d" % i, v)
        for i in range(300):
            c.put("small/%05d" % i, "x")
        c.close()
        _, rev = count(leader, "small/")
        base = rss_anon_kb(leader.proc.pid)
        t0 = time.monotonic()
        lag.restart(wait=False)
        peak = {}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                for m in (leader, lag):
                    try:
                        peak[m.name] = max(peak.get(m.name, 0), rss_anon_kb(m.proc.pid))
                    except OSError:
                        pass
                time.sleep(0.01)

        th = threading.Thread(target=sample)
        th.start()
        while True:
            try:
                if count(lag, "small/", serializable=True)[1] >= rev:
                    break
            except Exception:  # noqa: BLE001 (starting)
                pass
            time.sleep(0.05)
        took = time.monotonic() - t0
        stop.set()
        th.join()
        with open(lag.log_path, "rb") as f:
            installed = b"snapshot installed" in f.read()
        print("store %d MiB of values: caught up in %.2f s (%s)" % (
            mb, took, "through a snapshot" if installed else "from the log"))
        print("leader RssAnon: %d MB before, peak %d MB; member peak %d MB" % (
            base // 1024, peak.get(leader.name, 0) // 1024, peak.get(lag.name, 0) // 1024))
    finally:
        for f in reversed(req.fins):
            f()


if __name__ == "__main__":
    main()
