"""Crash tests: kill -9 the server under test in the middle of writes, and
SIGTERM restarts.  No acknowledged write may be lost, nothing that was never
attempted may appear, and the revision must continue.

Run:  /usr/bin/python3 -m pytest -q tests/crash/test_crash.py
"""

import itertools
import os
import sys
import threading
import time

import grpc
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import server, _test_deadline  # noqa: E402,F401  (fixtures)

from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402

WRITERS = 4
WRITE_SECONDS = 2.0
CYCLES = 3
RPC_TIMEOUT = 2.0


def kv_stub(srv):
    ch = grpc.insecure_channel(srv.endpoint)
    return ch, rpc_pb2_grpc.KVStub(ch)


def range_all(stub, prefix):
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    return stub.Range(rpc_pb2.RangeRequest(key=prefix, range_end=end), timeout=10)


class Writer:
    """Threads doing puts of unique keys k/<n> = <n>, recording acks."""

    def __init__(self, srv, counter):
        self.srv = srv
        self.counter = counter
        self.lock = threading.Lock()
        self.attempted = set()
        self.acked = {}            # n -> revision in the Put response header
        self.errors = 0
        self.stop = threading.Event()
        self.threads = []

    def _run(self):
        ch, stub = kv_stub(self.srv)
        try:
            while not self.stop.is_set():
                with self.lock:
                    n = next(self.counter)
                    self.attempted.add(n)
                try:
                    resp = stub.Put(rpc_pb2.PutRequest(key=b"k/%d" % n, value=b"%d" % n),
                                    timeout=RPC_TIMEOUT)
                except grpc.RpcError:
                    with self.lock:
                        self.errors += 1
                    time.sleep(0.01)
                    continue
                with self.lock:
                    self.acked[n] = resp.header.revision
        finally:
            ch.close()

    def start(self):
        for _ in range(WRITERS):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self.threads.append(t)

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=RPC_TIMEOUT + 5)
            assert not t.is_alive(), "writer thread hung"


def check_state(srv, attempted, acked, where):
    ch, stub = kv_stub(srv)
    try:
        resp = range_all(stub, b"k/")
        present = {}
        for kv in resp.kvs:
            n = int(kv.key[2:])
            present[n] = kv
            assert n in attempted, "%s: key %r exists but was never attempted" % (where, kv.key)
            assert kv.value == b"%d" % n, "%s: key %r has value %r" % (where, kv.key, kv.value)
            assert kv.version == 1 and kv.create_revision == kv.mod_revision, (where, kv)
        lost = sorted(n for n in acked if n not in present)
        assert not lost, "%s: %d acknowledged keys lost, e.g. %s" % (
            where, len(lost), ["k/%d" % n for n in lost[:10]])
        for n, rev in acked.items():
            assert present[n].mod_revision == rev, (
                "%s: k/%d acknowledged at revision %d but stored with mod_revision %d" % (
                    where, n, rev, present[n].mod_revision))
        max_acked = max(acked.values()) if acked else 1
        assert resp.header.revision >= max_acked, (where, resp.header.revision, max_acked)
        # revisions are unique: no two keys share a mod revision
        revs = [kv.mod_revision for kv in resp.kvs]
        assert len(revs) == len(set(revs)), "%s: duplicate revisions" % where
        # the revision continues
        p = stub.Put(rpc_pb2.PutRequest(key=b"probe", value=where.encode()), timeout=10)
        assert p.header.revision > max_acked, (
            "%s: new put got revision %d, last acknowledged was %d" % (where, p.header.revision, max_acked))
        assert p.header.revision == resp.header.revision + 1, (where, p.header.revision, resp.header.revision)
        return len(present), p.header.revision
    finally:
        ch.close()


def test_kill9_during_writes(server):  # noqa: F811
    counter = itertools.count()
    attempted, acked = set(), {}
    report = []
    for cycle in range(CYCLES):
        w = Writer(server, counter)
        w.start()
        time.sleep(WRITE_SECONDS)
        server.kill()                      # kill -9 mid-write
        w.join()
        attempted |= w.attempted
        acked.update(w.acked)
        assert len(w.acked) > 0, "cycle %d: no write was acknowledged in %.1fs" % (cycle, WRITE_SECONDS)
        t0 = time.monotonic()
        server.restart()
        t_restart = time.monotonic() - t0
        n_present, rev = check_state(server, attempted, acked, "after kill -9 #%d" % (cycle + 1))
        report.append("cycle %d: %d acked this cycle, %d attempted total, %d present, "
                      "%d in doubt, restart %.2fs, revision now %d" % (
                          cycle + 1, len(w.acked), len(attempted), n_present,
                          len(attempted) - len(acked), t_restart, rev))
    print("\n" + "\n".join(report))


def test_sigterm_restart(server):  # noqa: F811
    ch, stub = kv_stub(server)
    try:
        for i in range(50):
            stub.Put(rpc_pb2.PutRequest(key=b"s/%02d" % i, value=b"v%d" % i), timeout=10)
        for i in range(0, 50, 5):
            stub.Put(rpc_pb2.PutRequest(key=b"s/%02d" % i, value=b"w%d" % i), timeout=10)
        stub.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"s/4", range_end=b"s/5"), timeout=10)
        stub.Compact(rpc_pb2.CompactionRequest(revision=30, physical=True), timeout=10)
        stub.Put(rpc_pb2.PutRequest(key=b"s/last", value=b"l"), timeout=10)
        before = range_all(stub, b"s/")
        before_rev = before.header.revision
        at_40 = stub.Range(rpc_pb2.RangeRequest(key=b"s/", range_end=b"s0", revision=40), timeout=10)
    finally:
        ch.close()
    assert before_rev == 63 and before.count == 41

    t0 = time.monotonic()
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except Exception:
        pytest.fail("server did not exit within 10s of SIGTERM")
    t_stop = time.monotonic() - t0
    server.restart()

    ch, stub = kv_stub(server)
    try:
        after = range_all(stub, b"s/")
        assert list(after.kvs) == list(before.kvs)
        assert after.header.revision == before_rev
        assert after.count == before.count
        again_40 = stub.Range(rpc_pb2.RangeRequest(key=b"s/", range_end=b"s0", revision=40), timeout=10)
        assert list(again_40.kvs) == list(at_40.kvs)
        with pytest.raises(grpc.RpcError) as ei:
            stub.Range(rpc_pb2.RangeRequest(key=b"s/", range_end=b"s0", revision=29), timeout=10)
        assert ei.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert ei.value.details() == "etcdserver: mvcc: required revision has been compacted"
        p = stub.Put(rpc_pb2.PutRequest(key=b"s/new", value=b"n"), timeout=10)
        assert p.header.revision == before_rev + 1
    finally:
        ch.close()
    print("\nSIGTERM stop took %.2fs" % t_stop)


def test_sigterm_restart_keeps_leases(server):  # noqa: F811
    ch, stub = kv_stub(server)
    lstub = rpc_pb2_grpc.LeaseStub(ch)
    try:
        lstub.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=0x77, TTL=600), timeout=10)
        lstub.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=0x78, TTL=600), timeout=10)
        stub.Put(rpc_pb2.PutRequest(key=b"l/a", value=b"a", lease=0x77), timeout=10)
        stub.Put(rpc_pb2.PutRequest(key=b"l/b", value=b"b", lease=0x77), timeout=10)
        lstub.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=0x78), timeout=10)
        rev = stub.Put(rpc_pb2.PutRequest(key=b"l/c", value=b"c"), timeout=10).header.revision
    finally:
        ch.close()
    server.stop()
    server.restart()
    ch, stub = kv_stub(server)
    lstub = rpc_pb2_grpc.LeaseStub(ch)
    try:
        ttl = lstub.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=0x77, keys=True), timeout=10)
        assert ttl.grantedTTL == 600 and 0 < ttl.TTL <= 600
        assert sorted(ttl.keys) == [b"l/a", b"l/b"]
        ttl = lstub.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=0x78), timeout=10)
        assert ttl.TTL == -1                               # revoked stays revoked
        r = range_all(stub, b"l/")
        assert [(kv.key, kv.lease) for kv in r.kvs] == [(b"l/a", 0x77), (b"l/b", 0x77), (b"l/c", 0)]
        assert r.header.revision == rev
        lstub.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=0x77), timeout=10)
        r = range_all(stub, b"l/")
        assert [kv.key for kv in r.kvs] == [b"l/c"] and r.header.revision == rev + 1
    finally:
        ch.close()
