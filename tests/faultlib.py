"""Clusters behind fault proxies, a recorded client workload and watch
streams, for tests/integration/test_faults.py and tests/torture.py.

    fc = FaultCluster(n=3).start()        # members advertise proxy URLs
    wl = Workload(fc, prefix="f/1/", seed=1).start()
    ... faults: fc.kill(m), fc.restart(m), fc.net.isolate(name), fc.net.heal()
    anomalies = wl.finish()               # stops, heals, checks everything

Every member's peer port and client port sit behind a FaultNet proxy
(tests/tools/faultproxy.py): the other members reach it only through
them (raft traffic and forwarded client requests alike); the test's own
clients connect to the real client port, so a partitioned member still
answers its clients -- as a member on the minority side of a real
partition does.
"""

import os
import queue
import random
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
from harness import READY_TIMEOUT, ClusterMember  # noqa: E402
from faultproxy import FaultNet, free_port  # noqa: E402
import lincheck  # noqa: E402
from lincheck import Op  # noqa: E402

from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402


def prefix_end(p):
    return p[:-1] + bytes([p[-1] + 1])


class FaultMember(ClusterMember):
    """A member that listens on its real ports and advertises its proxies."""

    def __init__(self, name, label, extra_args=()):
        super().__init__(name, label, extra_args=extra_args)
        self.peer_proxy_port = free_port()
        self.client_proxy_port = free_port()

    @property
    def adv_peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_proxy_port

    @property
    def adv_client_url(self):
        return "http://127.0.0.1:%d" % self.client_proxy_port

    def args(self):
        return [
            self.binary,
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.adv_client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.adv_peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", self.cluster_state,
            "--initial-cluster-token", self.token,
        ] + self.extra_args


class FaultCluster:
    def __init__(self, n=3, label="flt", extra_args=()):
        # KETCH_FAULT_ARGS: more server flags for every member, e.g.
        # "--snapshot-count 500" to take snapshots during the faults
        extra_args = list(extra_args) + os.environ.get("KETCH_FAULT_ARGS", "").split()
        self.net = FaultNet()
        self.members = [FaultMember("m%d" % (i + 1), "%s-m%d" % (label, i + 1),
                                    extra_args=extra_args) for i in range(n)]
        ic = ",".join("%s=%s" % (m.name, m.adv_peer_url) for m in self.members)
        for m in self.members:
            m.initial_cluster = ic
            self.net.add_proxy(m.name, m.peer_proxy_port, m.peer_port)
            self.net.add_proxy(m.name, m.client_proxy_port, m.client_port)
        self.log = []
        self.killed = set()      # members this test stopped on purpose
        self.crashes = []        # members that exited on their own

    def note(self, what):
        self.log.append((time.monotonic(), what))

    def by_name(self, name):
        return next(m for m in self.members if m.name == name)

    def start(self):
        for m in self.members:
            m.start(wait=False)
            self.net.register(m.name, m.proc.pid)
        for m in self.members:
            m.wait_ready(timeout=max(READY_TIMEOUT, 30))
        return self

    def kill(self, m):
        self.note("kill -9 %s" % m.name)
        self.killed.add(m.name)
        m.kill()

    def restart(self, m):
        self.note("restart %s" % m.name)
        self.check_alive()
        self.killed.discard(m.name)
        m.restart(wait=False)
        self.net.register(m.name, m.proc.pid)
        # serving, not necessarily with a quorum (a partition may be in
        # force): Status answers locally
        deadline = time.monotonic() + 60
        while True:
            if m.proc.poll() is not None:
                raise RuntimeError("%s exited during its restart:\n%s" % (m.name, m.log_tail()))
            try:
                self.status(m, timeout=1)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise RuntimeError("%s does not answer after its restart:\n%s" % (
                        m.name, m.log_tail()))
                time.sleep(0.05)

    def pause(self, m):
        """SIGSTOP: the process freezes (a long GC pause, a stalled VM)."""
        import signal
        self.note("SIGSTOP %s" % m.name)
        m.proc.send_signal(signal.SIGSTOP)

    def resume(self, m):
        import signal
        self.note("SIGCONT %s" % m.name)
        m.proc.send_signal(signal.SIGCONT)

    def check_alive(self):
        """Records every member that exited without being killed."""
        for m in self.members:
            if m.proc is not None and m.proc.poll() is not None and m.name not in self.killed:
                self.crashes.append("%s exited by itself with status %s; log:\n%s" % (
                    m.name, m.proc.returncode, m.log_tail(60)))
                self.killed.add(m.name)
        return self.crashes

    def cleanup(self):
        errs = []
        for m in self.members:
            try:
                m.cleanup()
            except AssertionError as e:   # a sanitizer report
                errs.append(str(e))
        self.net.close()
        if errs:
            raise AssertionError("\n".join(errs))

    def status(self, m, timeout=2):
        ch = grpc.insecure_channel(m.endpoint)
        try:
            return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(),
                                                           timeout=timeout)
        finally:
            ch.close()

    def leader(self, among=None, timeout=60):
        """The running member that every running member of `among` agrees
        leads (waits for one)."""
        among = [m for m in (among or self.members) if m.running()]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                sts = {m.name: self.status(m) for m in among}
                leaders = {s.leader for s in sts.values()}
                if len(leaders) == 1 and 0 not in leaders:
                    lid = leaders.pop()
                    for m in among:
                        if sts[m.name].header.member_id == lid:
                            return m
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise AssertionError("no agreed leader among %s within %ds" % (
            [m.name for m in among], timeout))


# --- the workload ---------------------------------------------------------

# KETCH_FAULT_SERIALIZABLE=1: reads are serializable (local, may be stale):
# the checker must then report stale reads -- a check of the checker.
SERIALIZABLE = bool(os.environ.get("KETCH_FAULT_SERIALIZABLE"))

DEFINITELY_NOT_SENT = ("failed to connect", "Connection refused", "connection refused",
                       "Socket closed before", "DNS resolution failed")


class Workload:
    """Clients on every member doing put/get/delete/CAS on a few keys,
    each op recorded for the checker; a watch stream on every member."""

    def __init__(self, fc, prefix, seed=0, clients_per_member=2, keys=12, op_timeout=3.0,
                 pause=0.004):
        self.fc = fc
        self.prefix = prefix.encode()
        self.rnd = random.Random(seed)
        self.keys = [self.prefix + b"k%02d" % i for i in range(keys)]
        self.op_timeout = op_timeout
        self.pause = pause
        self.history = []
        self.hlock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = []
        self.streams = {}        # member name -> [event]
        self.watch_errors = []
        self.watchers = {}
        self.clients_per_member = clients_per_member
        self.start_rev = None
        self.counts = {"ok": 0, "unknown": 0, "fail": 0}

    # -- recording ----------------------------------------------------------
    def _record(self, op):
        with self.hlock:
            op.id = len(self.history)
            self.history.append(op)
            self.counts[op.status] += 1

    def start(self):
        # the first revision of this workload: watches start here
        m0 = self.fc.members[0]
        ch = grpc.insecure_channel(m0.endpoint)
        try:
            r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\0"), timeout=30)
            self.start_rev = r.header.revision + 1
        finally:
            ch.close()
        for m in self.fc.members:
            self._start_watch(m)
        cid = 0
        for m in self.fc.members:
            for _ in range(self.clients_per_member):
                t = threading.Thread(target=self._client, args=(m, cid,
                                                                self.rnd.randrange(1 << 30)),
                                     daemon=True)
                cid += 1
                self.threads.append(t)
                t.start()
        return self

    def _client(self, member, cid, seed):
        r = random.Random(seed)
        ch = grpc.insecure_channel(member.endpoint)
        kv = rpc_pb2_grpc.KVStub(ch)
        last_mod = {}
        n = 0
        while not self.stop_ev.is_set():
            key = r.choice(self.keys)
            c = r.random()
            n += 1
            val = ("c%d-%d" % (cid, n)).encode()
            t0 = time.monotonic()
            try:
                if c < 0.40:
                    op = Op("put", key, val, t0, client=cid, member=member.name)
                    resp = kv.Put(rpc_pb2.PutRequest(key=key, value=val), timeout=self.op_timeout)
                    op.out = resp.header.revision
                elif c < 0.75:
                    op = Op("get", key, None, t0, client=cid, member=member.name)
                    resp = kv.Range(rpc_pb2.RangeRequest(key=key, serializable=SERIALIZABLE),
                                    timeout=self.op_timeout)
                    if resp.kvs:
                        kvx = resp.kvs[0]
                        op.out = (kvx.value, kvx.mod_revision, resp.header.revision)
                        last_mod[key] = kvx.mod_revision
                    else:
                        op.out = (None, 0, resp.header.revision)
                        last_mod[key] = 0
                elif c < 0.90:
                    expect = last_mod.get(key, 0)
                    if r.random() < 0.2:
                        expect = r.choice([0, expect + 1, max(expect - 1, 0)])
                    op = Op("cas", key, (expect, val), t0, client=cid, member=member.name)
                    req = rpc_pb2.TxnRequest(
                        compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.MOD,
                                                 result=rpc_pb2.Compare.EQUAL,
                                                 mod_revision=expect)],
                        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key,
                                                                                  value=val))],
                        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))])
                    resp = kv.Txn(req, timeout=self.op_timeout)
                    cur = None
                    if not resp.succeeded:
                        kvs = resp.responses[0].response_range.kvs
                        cur = (kvs[0].value, kvs[0].mod_revision) if kvs else (None, 0)
                        last_mod[key] = cur[1]
                    else:
                        last_mod[key] = resp.header.revision
                    op.out = (resp.succeeded, resp.header.revision, cur)
                else:
                    op = Op("delete", key, None, t0, client=cid, member=member.name)
                    resp = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=key),
                                          timeout=self.op_timeout)
                    op.out = (resp.deleted, resp.header.revision)
                op.ret = time.monotonic()
                op.status = "ok"
            except grpc.RpcError as e:
                op.ret = None
                det = e.details() or ""
                if op.kind == "get" or (e.code() == grpc.StatusCode.UNAVAILABLE and
                                        any(s in det for s in DEFINITELY_NOT_SENT)):
                    op.status = "fail"
                else:
                    op.status = "unknown"
                op.out = (e.code().name, det)
                self._record(op)
                time.sleep(0.05 + r.random() * 0.1)
                continue
            self._record(op)
            if self.pause:
                time.sleep(self.pause * r.random() * 2)
        ch.close()

    # -- watches ------------------------------------------------------------
    def _start_watch(self, m):
        evs = self.streams.setdefault(m.name, [])
        state = {"call": None, "next": self.start_rev}
        self.watchers[m.name] = state

        def run():
            while not state.get("done"):
                q = queue.Queue()
                q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                    key=self.prefix, range_end=prefix_end(self.prefix),
                    start_revision=state["next"])))

                def reqs():
                    while True:
                        item = q.get()
                        if item is None:
                            return
                        yield item
                ch = grpc.insecure_channel(m.endpoint)
                try:
                    call = rpc_pb2_grpc.WatchStub(ch).Watch(reqs())
                    state["call"] = call
                    state["connects"] = state.get("connects", 0) + 1
                    state.setdefault("trace", []).append(("call", round(time.monotonic(), 2)))
                    if state.get("done"):
                        call.cancel()
                    for resp in call:
                        if resp.created:
                            state.setdefault("created", []).append(
                                (resp.header.revision, state["next"]))
                        if resp.canceled:
                            self.watch_errors.append("watch on %s canceled: %r" % (
                                m.name, resp.cancel_reason))
                            break
                        for ev in resp.events:
                            kvx = ev.kv
                            if ev.type == 0:
                                e = (kvx.mod_revision, "PUT", kvx.key, kvx.value,
                                     kvx.create_revision, kvx.version)
                            else:
                                e = (kvx.mod_revision, "DELETE", kvx.key, None, 0, 0)
                            evs.append(e)
                            state["next"] = kvx.mod_revision + 1
                    state.setdefault("trace", []).append(("eof", round(time.monotonic(), 2)))
                except grpc.RpcError as e:
                    state.setdefault("trace", []).append((e.code().name,
                                                          round(time.monotonic(), 2)))
                finally:
                    q.put(None)
                    ch.close()
                if not state.get("done"):
                    time.sleep(0.2)

        t = threading.Thread(target=run, daemon=True)
        state["thread"] = t
        t.start()

    def _stop_watches(self):
        for st in self.watchers.values():
            st["done"] = True
            if st["call"] is not None:
                st["call"].cancel()
        for st in self.watchers.values():
            st["thread"].join(10)

    # -- the end --------------------------------------------------------------
    def stop_clients(self):
        self.stop_ev_clients = True
        self.stop_ev.set()
        for t in self.threads:
            t.join(self.op_timeout + 10)

    def final_events(self, member, upto, start=None, timeout=60):
        """Every event of the prefix from start_rev to `upto` (a fresh watch)."""
        ch = grpc.insecure_channel(member.endpoint)
        out = []
        q = queue.Queue()
        q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=self.prefix, range_end=prefix_end(self.prefix),
            start_revision=start or self.start_rev)))

        def reqs():
            while True:
                item = q.get()
                if item is None:
                    return
                yield item
        call = rpc_pb2_grpc.WatchStub(ch).Watch(reqs(), timeout=timeout)
        try:
            for resp in call:
                for ev in resp.events:
                    kvx = ev.kv
                    if ev.type == 0:
                        out.append((kvx.mod_revision, "PUT", kvx.key, kvx.value,
                                    kvx.create_revision, kvx.version))
                    else:
                        out.append((kvx.mod_revision, "DELETE", kvx.key, None, 0, 0))
                if out and out[-1][0] >= upto:
                    break
        finally:
            q.put(None)
            call.cancel()
            ch.close()
        return out

    def finish(self, settle_timeout=60):
        """Stop clients, heal, restart dead members, write a sentinel, wait
        for every watch to reach it, and run every check. Returns the list
        of anomalies (empty: all good)."""
        self.stop_clients()
        self.fc.net.heal()
        self.fc.check_alive()
        for m in self.fc.members:
            if not m.running():
                self.fc.restart(m)
        # a sentinel write (acknowledged) marks the end of the history
        key = self.prefix + b"zz-end"
        deadline = time.monotonic() + settle_timeout
        sentinel = None
        attempt = 0
        while sentinel is None:
            m = self.fc.members[attempt % len(self.fc.members)]
            val = b"end-%d" % attempt
            attempt += 1
            ch = grpc.insecure_channel(m.endpoint)
            t0 = time.monotonic()
            try:
                r = rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=val),
                                                timeout=5)
                sentinel = Op("put", key, val, t0, time.monotonic(), "ok",
                              r.header.revision, client=-1, member=m.name)
            except grpc.RpcError as e:
                # may still happen: recorded as unknown
                self._record(Op("put", key, val, t0, None, "unknown",
                                (e.code().name, e.details()), client=-1, member=m.name))
                if time.monotonic() > deadline:
                    raise AssertionError("the cluster did not take a write after healing")
                time.sleep(0.2)
            finally:
                ch.close()
        self._record(sentinel)
        end = sentinel.out
        anomalies = list(self.fc.crashes)
        while time.monotonic() < deadline:
            if all(s and s[-1][0] >= end for s in self.streams.values()):
                break
            time.sleep(0.1)
        self._stop_watches()
        for name, s in self.streams.items():
            if not s or s[-1][0] < end:
                m = self.fc.by_name(name)
                try:
                    ch = grpc.insecure_channel(m.endpoint)
                    r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(
                        key=self.prefix, range_end=prefix_end(self.prefix), serializable=True,
                        count_only=True), timeout=5)
                    ch.close()
                    where = "its store is at revision %d" % r.header.revision
                except grpc.RpcError as e:
                    where = "it does not answer: %s" % e.details()
                try:
                    probe = self.final_events(m, end, start=self.watchers[name]["next"],
                                              timeout=5)
                    where += "; a new watch from %d gets %d events" % (
                        self.watchers[name]["next"], len(probe))
                except grpc.RpcError as e:
                    where += "; a new watch from %d fails: %s %s" % (
                        self.watchers[name]["next"], e.code().name, e.details())
                anomalies.append("watch on %s never reached the end revision %d (last %r, "
                                 "%d reconnects; %s)" % (
                                     name, end, s[-1] if s else None,
                                     self.watchers[name].get("connects", 0), where) +
                                 " streams created at (revision, start): %r; trace %r; faults %r" % (
                                     self.watchers[name].get("created"),
                                     self.watchers[name].get("trace"),
                                     [(round(t, 2), w) for t, w in self.fc.log]))
        anomalies.extend(self.watch_errors)
        final = None
        for ref in self.fc.members:
            try:
                final = self.final_events(ref, end, timeout=20)
                break
            except grpc.RpcError:
                continue
        if final is None:
            raise AssertionError("no member delivers the history up to revision %d" % end)
        # the history ends at the sentinel (a retried sentinel may land later)
        final = [e for e in final if e[0] <= end]
        for name in self.streams:
            self.streams[name] = [e for e in self.streams[name] if e[0] <= end]
        # every member holds the same history
        for m in self.fc.members:
            if m is ref:
                continue
            try:
                other = self.final_events(m, end, timeout=20)
            except grpc.RpcError as e:
                anomalies.append("%s cannot deliver the history up to revision %d: %s %s" % (
                    m.name, end, e.code().name, e.details()))
                continue
            other = [e for e in other if e[0] <= end]
            if other != final:
                anomalies.append("%s's event history differs from %s's (%d vs %d events)" % (
                    m.name, ref.name, len(other), len(final)))
        # the key table agrees with the history on every member
        want = {}
        for e in final:
            if e[1] == "PUT":
                want[e[2]] = (e[3], e[0], e[4], e[5])
            else:
                want.pop(e[2], None)
        for m in self.fc.members:
            ch = grpc.insecure_channel(m.endpoint)
            try:
                r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(
                    key=self.prefix, range_end=prefix_end(self.prefix), revision=end,
                    serializable=True), timeout=10)
                got = {kv.key: (kv.value, kv.mod_revision, kv.create_revision, kv.version)
                       for kv in r.kvs}
                if got != want:
                    bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
                    anomalies.append("%s: keys at revision %d differ from the event history "
                                     "for %d keys, e.g. %r: %r vs %r" % (
                                         m.name, end, len(bad), bad[0], got.get(bad[0]),
                                         want.get(bad[0])))
            except grpc.RpcError as e:
                anomalies.append("%s: cannot read the final state: %s" % (m.name, e.details()))
            finally:
                ch.close()
        hist = lincheck.resolve_unknowns(self.history, final)
        anomalies.extend(lincheck.check_durability(hist, final))
        anomalies.extend(lincheck.check_watch(self.streams, final))
        anomalies.extend(lincheck.check(hist))
        self.final = final
        return anomalies

    def summary(self):
        kinds = {}
        for o in self.history:
            kinds[(o.kind, o.status)] = kinds.get((o.kind, o.status), 0) + 1
        return "%d ops (%s), %d watch events per member" % (
            len(self.history), ", ".join("%s/%s=%d" % (k, s, n) for (k, s), n in
                                         sorted(kinds.items())),
            max((len(s) for s in self.streams.values()), default=0))
