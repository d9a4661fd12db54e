"""Leases (etcdserverpb.Lease) against the server under test, with real etcd
as the reference where the outcome is deterministic: Debian's etcdctl,
python3-etcd3 and raw gRPC; expiry with real time; restarts (SIGTERM and
kill -9).

Run:  KETCH_BIN=$PWD/build/ketch /usr/bin/python3 -m pytest -q tests/integration/test_lease.py
"""

import os
import re
import sys
import time

import grpc
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from harness import ETCD, Server, server, start_pair, _test_deadline  # noqa: E402,F401
from test_etcdctl import Pair  # noqa: E402

import etcd3  # noqa: E402
from etcd3 import exceptions as etcd_exc  # noqa: E402
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402

MIN_TTL = 2  # etcd's minimum with the default heartbeat/election (1.5 s, rounded up)


class Stubs:
    def __init__(self, srv):
        self.ch = grpc.insecure_channel(srv.endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.ch)
        self.lease = rpc_pb2_grpc.LeaseStub(self.ch)

    def close(self):
        self.ch.close()


def outcome(fn, req):
    """("ok", response without header ids) or ("err", code, details)."""
    try:
        r = fn(req, timeout=5)
    except grpc.RpcError as e:
        return ("err", e.code(), e.details())
    if r.HasField("header"):
        r.header.cluster_id = r.header.member_id = r.header.raft_term = 0
    return ("ok", r)


@pytest.fixture
def pair(request):
    sut, ref = start_pair(request)
    return Pair(sut, ref)


@pytest.fixture
def grpc_pair(pair):
    s, r = Stubs(pair.sut), Stubs(pair.ref)
    yield s, r
    s.close()
    r.close()


def same(stubs, method, req):
    """Runs req on both servers; asserts identical outcomes; returns it."""
    s, r = stubs
    a = outcome(getattr(r.lease if hasattr(r.lease, method) else r.kv, method), req)
    b = outcome(getattr(s.lease if hasattr(s.lease, method) else s.kv, method), req)
    assert a == b, "%s(%s)\n etcd: %s\n  sut: %s" % (method, req, a, b)
    return a


# ---------------------------------------------------------------------------
# comparisons with real etcd

def test_grpc_grant_revoke_like_etcd(grpc_pair):
    st = grpc_pair
    G = rpc_pb2.LeaseGrantRequest
    # client-chosen IDs; TTLs below the minimum are raised to it
    same(st, "LeaseGrant", G(ID=0x1234, TTL=60))
    same(st, "LeaseGrant", G(ID=0x1235, TTL=1))
    same(st, "LeaseGrant", G(ID=0x1236, TTL=-7))
    same(st, "LeaseGrant", G(ID=0x1237, TTL=0))
    same(st, "LeaseGrant", G(ID=-5, TTL=100))
    # errors, with etcd's codes and texts
    same(st, "LeaseGrant", G(ID=0x1234, TTL=60))              # lease already exists
    same(st, "LeaseGrant", G(ID=0x99, TTL=9000000001))        # too large lease TTL
    same(st, "LeaseGrant", G(ID=0x98, TTL=9000000000))        # the maximum is fine
    same(st, "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=0x777))
    # puts with and without leases
    P = rpc_pb2.PutRequest
    same(st, "Put", P(key=b"a", value=b"1", lease=0x1234))
    same(st, "Put", P(key=b"b", value=b"2", lease=0x1234))
    same(st, "Put", P(key=b"c", value=b"3", lease=0x1235))
    same(st, "Put", P(key=b"x", value=b"3", lease=0x4321))    # requested lease not found
    same(st, "Put", P(key=b"b", value=b"22", lease=0x1235, prev_kv=True))  # moves b
    same(st, "Put", P(key=b"a", value=b"11", ignore_lease=True, prev_kv=True))
    same(st, "Put", P(key=b"a", ignore_value=True, ignore_lease=True))
    same(st, "Put", P(key=b"nope", ignore_lease=True))        # key not found
    same(st, "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"c"))
    same(st, "Range", rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"))
    # keys attached (order-insensitive: etcd answers in map order)
    for lid, keys in ((0x1234, [b"a"]), (0x1235, [b"b"]), (0x1236, [])):
        req = rpc_pb2.LeaseTimeToLiveRequest(ID=lid, keys=True)
        outs = [outcome(x.lease.LeaseTimeToLive, req) for x in st]
        for o in outs:
            assert o[0] == "ok", o
            assert sorted(o[1].keys) == keys
        assert outs[0][1].grantedTTL == outs[1][1].grantedTTL
        assert outs[0][1].header.revision == outs[1][1].header.revision
        assert abs(outs[0][1].TTL - outs[1][1].TTL) <= 1
    # unknown lease: TTL -1, not an error
    same(st, "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=0x4242, keys=True))
    # revoke deletes a and the moved b each in one revision
    same(st, "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=0x1234))
    same(st, "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=0x1235))
    same(st, "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=0x1236))   # no keys: no revision
    same(st, "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=0x1236))   # gone
    same(st, "Range", rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"))
    same(st, "Put", P(key=b"a", value=b"1", lease=0x1234))    # revoked: not found
    # leases left: -5 (TTL 100), 0x1237 (TTL 2), 0x98 (max): by expiry
    a = same(st, "LeaseLeases", rpc_pb2.LeaseLeasesRequest())
    assert sorted(l.ID for l in a[1].leases) == sorted([-5, 0x1237, 0x98])


def test_grpc_keepalive_stream_like_etcd(grpc_pair):
    st = grpc_pair
    same(st, "LeaseGrant", rpc_pb2.LeaseGrantRequest(ID=0x10, TTL=30))
    same(st, "Put", rpc_pb2.PutRequest(key=b"k", value=b"v", lease=0x10))
    res = []
    for x in st:
        reqs = [rpc_pb2.LeaseKeepAliveRequest(ID=i) for i in (0x10, 0x11, 0x10, 0)]
        out = []
        for r in x.lease.LeaseKeepAlive(iter(reqs), timeout=5):
            out.append((r.ID, r.TTL, r.header.revision))
        res.append(out)
    assert res[0] == res[1] == [(0x10, 30, 2), (0x11, 0, 2), (0x10, 30, 2), (0, 0, 2)]


def test_etcdctl_leases_like_etcd(pair):
    p = pair
    for srv in (p.sut, p.ref):
        for n, ttl in enumerate(("100", "50")):
            r = p.raw(srv, "lease", "grant", ttl)
            assert r.returncode == 0, r.stderr
            m = re.match(r"^lease ([0-9a-f]{16}) granted with TTL\(%ss\)\n$" % ttl, r.stdout)
            assert m, r.stdout
            p.subst[srv][m.group(1)] = "<L%d>" % n
            p.subst_int[srv][int(m.group(1), 16)] = "<L%dDEC>" % n
    p.ok("put", "k1", "v", "--lease=<L0>")
    p.ok("put", "k2", "v", "--lease=<L0>", "-w", "json")
    p.ok("put", "k3", "v", "--lease=<L1>")
    p.ok("lease", "list")                          # soonest expiry first: L1, L0
    p.ok("lease", "keep-alive", "--once", "<L0>")
    p.ok("lease", "timetolive", "<L1>")            # remaining within the same second
    p.ok("lease", "timetolive", "0000000000000abc")   # already expired
    p.ok("lease", "timetolive", "0000000000000abc", "--keys")
    p.fail("lease", "keep-alive", "--once", "0000000000000abc")
    p.fail("lease", "grant", "9000000001")
    p.fail("put", "k9", "v", "--lease=0000000000000abc")
    p.ok("lease", "revoke", "<L0>")
    p.ok("get", "", "--from-key", "-w", "json")    # k1, k2 gone at one revision
    p.ok("lease", "timetolive", "<L0>")
    p.fail("lease", "revoke", "<L0>")
    p.ok("lease", "list")
    p.ok("lease", "revoke", "<L1>", "-w", "json")
    p.ok("lease", "list")


# ---------------------------------------------------------------------------
# python3-etcd3

@pytest.fixture
def client(server):  # noqa: F811
    c = etcd3.client(host="127.0.0.1", port=server.client_port, timeout=5)
    yield c
    c.close()


def test_python_client_leases(client):
    lease = client.lease(60)
    assert lease.id > 0 and lease.ttl == 60
    client.put("p1", "v", lease=lease)
    client.put("p2", "v", lease=lease.id)
    assert client.get("p1")[1].lease_id == lease.id
    assert sorted(lease.keys) == [b"p1", b"p2"]
    assert lease.granted_ttl == 60
    assert 58 <= lease.remaining_ttl <= 60
    resp = list(lease.refresh())
    assert len(resp) == 1 and resp[0].ID == lease.id and resp[0].TTL == 60
    # a chosen ID
    l2 = client.lease(1, lease_id=0x5151)
    assert (l2.id, l2.ttl) == (0x5151, MIN_TTL)
    with pytest.raises(etcd_exc.PreconditionFailedError):
        client.lease(10, lease_id=0x5151)
    lease.revoke()
    assert client.get("p1") == (None, None)
    assert client.get("p2") == (None, None)
    info = client.get_lease_info(lease.id)
    assert info.TTL == -1 and info.ID == lease.id
    with pytest.raises(Exception) as e:
        client.put("p3", "v", lease=lease.id)
    assert "requested lease not found" in str(e.value) or isinstance(
        e.value, etcd_exc.Etcd3Exception)
    client.revoke_lease(l2.id)


# ---------------------------------------------------------------------------
# expiry (real time)

def _exists(stubs, key):
    return stubs.kv.Range(rpc_pb2.RangeRequest(key=key), timeout=5).count == 1


def test_expiry_deletes_keys_in_one_revision(server):  # noqa: F811
    st = Stubs(server)
    try:
        g = st.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=MIN_TTL), timeout=5)
        t0 = time.monotonic()
        assert g.TTL == MIN_TTL
        for k in (b"e1", b"e2", b"e3"):
            st.kv.Put(rpc_pb2.PutRequest(key=k, value=b"v", lease=g.ID), timeout=5)
        st.kv.Put(rpc_pb2.PutRequest(key=b"keep", value=b"v"), timeout=5)
        rev_before = st.kv.Range(rpc_pb2.RangeRequest(key=b"keep"), timeout=5).header.revision
        # never early
        while time.monotonic() - t0 < MIN_TTL - 0.3:
            assert _exists(st, b"e1") and _exists(st, b"e3"), \
                "expired early at %.2fs" % (time.monotonic() - t0)
            time.sleep(0.1)
        # gone by TTL + 1.5 s
        while _exists(st, b"e1") or _exists(st, b"e2") or _exists(st, b"e3"):
            assert time.monotonic() - t0 < MIN_TTL + 1.5, "not expired in time"
            time.sleep(0.05)
        r = st.kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"), timeout=5)
        assert [kv.key for kv in r.kvs] == [b"keep"]
        assert r.header.revision == rev_before + 1    # one revision for the three deletes
        ttl = st.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=g.ID), timeout=5)
        assert ttl.TTL == -1
        ls = st.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=5)
        assert len(ls.leases) == 0
    finally:
        st.close()


def test_keepalive_keeps_lease(server):  # noqa: F811
    st = Stubs(server)
    try:
        g = st.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=MIN_TTL, ID=0x77), timeout=5)
        st.kv.Put(rpc_pb2.PutRequest(key=b"ka", value=b"v", lease=g.ID), timeout=5)
        t0 = time.monotonic()

        def pings():
            while time.monotonic() - t0 < 4.0:
                yield rpc_pb2.LeaseKeepAliveRequest(ID=0x77)
                time.sleep(0.5)
        n = 0
        for r in st.lease.LeaseKeepAlive(pings(), timeout=10):
            assert r.ID == 0x77 and r.TTL == MIN_TTL
            n += 1
        assert n >= 7
        assert _exists(st, b"ka")
        while _exists(st, b"ka"):
            assert time.monotonic() - t0 < 4.0 + MIN_TTL + 1.5
            time.sleep(0.05)
    finally:
        st.close()


# ---------------------------------------------------------------------------
# restarts

@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_restart_keeps_leases(server, how):  # noqa: F811
    st = Stubs(server)
    g = st.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=300, ID=0xabc), timeout=5)
    short = st.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=MIN_TTL, ID=0xdef), timeout=5)
    st.kv.Put(rpc_pb2.PutRequest(key=b"long1", value=b"v", lease=g.ID), timeout=5)
    st.kv.Put(rpc_pb2.PutRequest(key=b"long2", value=b"v", lease=g.ID), timeout=5)
    st.kv.Put(rpc_pb2.PutRequest(key=b"short", value=b"v", lease=short.ID), timeout=5)
    st.close()
    if how == "kill9":
        server.kill()
    else:
        server.stop()
    time.sleep(MIN_TTL + 0.5)   # the short lease's TTL passes while down
    server.restart()
    t0 = time.monotonic()
    st = Stubs(server)
    try:
        assert _exists(st, b"long1") and _exists(st, b"long2")
        ttl = st.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=0xabc, keys=True),
                                       timeout=5)
        assert ttl.grantedTTL == 300
        assert 290 <= ttl.TTL <= 300
        assert sorted(ttl.keys) == [b"long1", b"long2"]
        # the short lease is not expired early (it gets a fresh TTL at
        # start, as etcd's promotion does) but does expire after it
        ls = st.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=5)
        assert sorted(l.ID for l in ls.leases) == [0xabc, 0xdef]
        while _exists(st, b"short"):
            assert time.monotonic() - t0 < MIN_TTL + 2.5, "short lease never expired"
            time.sleep(0.05)
        assert _exists(st, b"long1")
        # the lease still works after the restart
        r = next(iter(st.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=0xabc)]),
                                              timeout=5)))
        assert r.TTL == 300
        st.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=0xabc), timeout=5)
        assert not _exists(st, b"long1") and not _exists(st, b"long2")
    finally:
        st.close()
    # and the revoke survives another restart
    server.restart()
    st = Stubs(server)
    try:
        assert not _exists(st, b"long1")
        ttl = st.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=0xabc), timeout=5)
        assert ttl.TTL == -1
    finally:
        st.close()
