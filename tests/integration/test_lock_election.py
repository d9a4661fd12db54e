"""v3lockpb.Lock and v3electionpb.Election against the server under test,
with real etcd as the reference where the outcome is deterministic: raw
gRPC (stubs built in lockpb.py), Debian's `etcdctl lock` / `etcdctl elect`
and python3-etcd3 locks (those two are client-side recipes on Txn, Lease
and Watch: their contended cases need the Watch service and are skipped
while the server under test has none).

Run:  KETCH_BIN=$PWD/build/ketch /usr/bin/python3 -m pytest -q tests/integration/test_lock_election.py
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from harness import ETCDCTL, is_etcd, ref_etcd, server, _test_deadline  # noqa: E402,F401

import etcd3  # noqa: E402
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402
import lockpb as P  # noqa: E402


class Stubs:
    def __init__(self, srv):
        self.ch = grpc.insecure_channel(srv.endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.ch)
        self.lease = rpc_pb2_grpc.LeaseStub(self.ch)
        self.lock = P.LockStub(self.ch)
        self.el = P.ElectionStub(self.ch)

    def grant(self, ttl=30):
        return self.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl)).ID

    def keys(self, prefix):
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        r = self.kv.Range(rpc_pb2.RangeRequest(key=prefix, range_end=end))
        return [(kv.key, kv.create_revision, kv.value) for kv in r.kvs]

    def wait_keys(self, prefix, n, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.keys(prefix)) >= n:
                return
            time.sleep(0.02)
        raise AssertionError("%d keys under %r not seen" % (n, prefix))

    def close(self):
        self.ch.close()


def outcome(fn, *a, **kw):
    """('ok', response) or (code name, details)."""
    try:
        return ("ok", fn(*a, **kw))
    except grpc.RpcError as e:
        return (e.code().name, e.details())


def has_watch(srv):
    """Whether the server under test serves Watch (etcdctl's and
    python3-etcd3's lock/election recipes wait with it)."""
    ch = grpc.insecure_channel(srv.endpoint)
    try:
        stub = rpc_pb2_grpc.WatchStub(ch)
        it = stub.Watch(iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"\0probe"))]), timeout=1)
        next(it)
        return True
    except grpc.RpcError as e:
        return e.code() != grpc.StatusCode.UNIMPLEMENTED
    finally:
        ch.close()


def hexkey(prefix, lease):
    return prefix + (b"%x" % lease)


# ---------------------------------------------------------------------------
# errors and answers, compared with real etcd

def error_script(srv):
    """Deterministic outcomes (no IDs or revisions): the same list from both."""
    st = Stubs(srv)
    out = []
    try:
        lease = st.grant()
        out.append(outcome(st.lock.Lock, P.LockRequest(name=b"l", lease=123456789), timeout=5))
        out.append(outcome(st.lock.Unlock, P.UnlockRequest(), timeout=5))
        code, r = outcome(st.lock.Lock, P.LockRequest(name=b"l", lease=lease), timeout=5)
        out.append((code, r.key == hexkey(b"l/", lease)))
        code, r2 = outcome(st.lock.Lock, P.LockRequest(name=b"l", lease=lease), timeout=5)
        out.append((code, r2.key == r.key, r2.header.revision == r.header.revision))
        out.append(outcome(st.lock.Lock, P.LockRequest(name=b"l", lease=st.grant()), timeout=1)[0])
        out.append(outcome(st.el.Leader, P.LeaderRequest(name=b"e"), timeout=5))
        out.append(outcome(st.el.Proclaim, P.ProclaimRequest(value=b"x"), timeout=5))
        out.append(outcome(st.el.Resign, P.ResignRequest(), timeout=5))
        out.append(outcome(st.el.Campaign, P.CampaignRequest(name=b"e", lease=987654321, value=b"v"),
                           timeout=5))
        code, c = outcome(st.el.Campaign, P.CampaignRequest(name=b"e", lease=lease, value=b"a"),
                          timeout=5)
        out.append((code, c.leader.name, c.leader.key == hexkey(b"e/", lease),
                    c.leader.lease == lease, c.leader.rev == c.header.revision))
        # campaigning again with another value proclaims it; same leader key
        code, c2 = outcome(st.el.Campaign, P.CampaignRequest(name=b"e", lease=lease, value=b"b"),
                           timeout=5)
        out.append((code, c2.leader == c.leader, c2.header.revision == c.header.revision))
        code, l = outcome(st.el.Leader, P.LeaderRequest(name=b"e"), timeout=5)
        out.append((code, l.kv.key == c.leader.key, l.kv.value, l.kv.version,
                    l.kv.create_revision == c.leader.rev))
        out.append(outcome(st.el.Proclaim, P.ProclaimRequest(leader=c.leader, value=b"c"),
                           timeout=5)[0])
        bad = P.LeaderKey()
        bad.CopyFrom(c.leader)
        bad.rev = 1
        out.append(outcome(st.el.Proclaim, P.ProclaimRequest(leader=bad, value=b"d"), timeout=5))
        out.append(outcome(st.el.Resign, P.ResignRequest(leader=bad), timeout=5)[0])
        out.append(outcome(st.el.Leader, P.LeaderRequest(name=b"e"), timeout=5)[1].kv.value)
        out.append(outcome(st.el.Resign, P.ResignRequest(leader=c.leader), timeout=5)[0])
        out.append(outcome(st.el.Leader, P.LeaderRequest(name=b"e"), timeout=5))
        # no lease: the server grants a 60 s session lease itself
        code, r0 = outcome(st.lock.Lock, P.LockRequest(name=b"nolease"), timeout=5)
        leases = [x.ID for x in st.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest()).leases]
        lid = int(r0.key.split(b"/")[1], 16)
        ttl = st.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lid))
        out.append((code, lid in leases, ttl.grantedTTL))
        out.append(outcome(st.lock.Unlock, P.UnlockRequest(key=r0.key), timeout=5)[0])
        out.append(st.keys(b"nolease/"))
    finally:
        st.close()
    return out


def test_answers_match_etcd(server, ref_etcd):
    got = error_script(server)
    want = error_script(ref_etcd)
    assert got == want
    # spot-check the texts etcd's clients match on
    assert ("UNKNOWN", "etcdserver: requested lease not found") in got
    assert ("UNKNOWN", "election: no leader") in got
    assert ("UNKNOWN", '"leader" field must be provided') in got
    assert ("UNKNOWN", "election: not leader") in got


# ---------------------------------------------------------------------------
# Lock: fairness, cancellation, lease loss

def test_lock_fair_in_creation_order(server):
    st = Stubs(server)
    try:
        holder = st.lock.Lock(P.LockRequest(name=b"fair", lease=st.grant()), timeout=5)
        order, errors = [], []
        threads = []
        for i in range(3):
            lease = st.grant()

            def contend(i=i, lease=lease):
                try:
                    r = st.lock.Lock(P.LockRequest(name=b"fair", lease=lease), timeout=20)
                    order.append((i, time.monotonic(), r.key))
                    time.sleep(0.2)
                    st.lock.Unlock(P.UnlockRequest(key=r.key), timeout=5)
                except grpc.RpcError as e:
                    errors.append(e)
            t = threading.Thread(target=contend)
            t.start()
            threads.append(t)
            st.wait_keys(b"fair/", i + 2)  # contender i is queued before i+1 starts
        time.sleep(0.3)
        assert order == [], "acquired while held"
        st.lock.Unlock(P.UnlockRequest(key=holder.key), timeout=5)
        for t in threads:
            t.join(20)
        assert not errors
        assert [o[0] for o in order] == [0, 1, 2]
        # each waited for the previous one's 0.2 s hold
        for a, b in zip(order, order[1:]):
            assert b[1] - a[1] >= 0.15
        assert st.keys(b"fair/") == []
    finally:
        st.close()


def test_lock_cancelled_waiter_releases_key(server):
    st = Stubs(server)
    try:
        holder = st.lock.Lock(P.LockRequest(name=b"c", lease=st.grant()), timeout=5)
        code, _ = outcome(st.lock.Lock, P.LockRequest(name=b"c", lease=st.grant()), timeout=0.5)
        assert code == "DEADLINE_EXCEEDED"
        deadline = time.monotonic() + 3
        while len(st.keys(b"c/")) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [k[0] for k in st.keys(b"c/")] == [holder.key]
    finally:
        st.close()


def test_lock_waiter_lease_revoked(server):
    if is_etcd(server.binary):
        pytest.skip("etcd 3.4 answers success without a key here; ketch fails as etcd 3.5")
    st = Stubs(server)
    try:
        st.lock.Lock(P.LockRequest(name=b"r", lease=st.grant()), timeout=5)
        lease = st.grant()
        res = {}

        def wait():
            res["o"] = outcome(st.lock.Lock, P.LockRequest(name=b"r", lease=lease), timeout=10)
        t = threading.Thread(target=wait)
        t.start()
        st.wait_keys(b"r/", 2)
        st.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease))
        t.join(10)
        assert res["o"] == ("UNKNOWN", "mutex: session is expired")
    finally:
        st.close()


def test_lock_released_when_holder_lease_expires(server):
    st = Stubs(server)
    try:
        st.lock.Lock(P.LockRequest(name=b"x", lease=st.grant(ttl=2)), timeout=5)
        t0 = time.monotonic()
        r = st.lock.Lock(P.LockRequest(name=b"x", lease=st.grant()), timeout=15)
        assert 1.0 <= time.monotonic() - t0 < 10
        assert len(st.keys(b"x/")) == 1 and st.keys(b"x/")[0][0] == r.key
    finally:
        st.close()


# ---------------------------------------------------------------------------
# Election: campaign queue, observe

def test_campaign_queue_and_observe(server):
    st = Stubs(server)
    try:
        seen, done = [], threading.Event()
        obs = st.el.Observe(P.LeaderRequest(name=b"el"), timeout=30)

        def observe():
            try:
                for m in obs:
                    seen.append((m.kv.key, m.kv.value, m.header.revision, m.kv.mod_revision))
            except grpc.RpcError:
                pass
            done.set()
        threading.Thread(target=observe, daemon=True).start()
        la, lb = st.grant(), st.grant()
        a = st.el.Campaign(P.CampaignRequest(name=b"el", lease=la, value=b"A"), timeout=5)
        res = {}

        def campaign_b():
            res["b"] = st.el.Campaign(P.CampaignRequest(name=b"el", lease=lb, value=b"B"),
                                      timeout=20)
        tb = threading.Thread(target=campaign_b)
        tb.start()
        st.wait_keys(b"el/", 2)
        time.sleep(0.3)
        assert "b" not in res
        st.el.Proclaim(P.ProclaimRequest(leader=a.leader, value=b"A2"), timeout=5)
        time.sleep(0.3)
        st.el.Resign(P.ResignRequest(leader=a.leader), timeout=5)
        tb.join(10)
        b = res["b"]
        assert b.leader.key == hexkey(b"el/", lb)
        l = st.el.Leader(P.LeaderRequest(name=b"el"), timeout=5)
        assert (l.kv.key, l.kv.value) == (b.leader.key, b"B")
        deadline = time.monotonic() + 5
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        obs.cancel()
        assert [(k, v) for k, v, _, _ in seen] == [
            (a.leader.key, b"A"), (a.leader.key, b"A2"), (b.leader.key, b"B")]
        assert seen[1][2] == seen[1][3]  # a proclamation carries its own revision
    finally:
        st.close()


def test_observe_waits_for_first_leader(server, ref_etcd):
    def run(srv):
        st = Stubs(srv)
        try:
            got = []
            obs = st.el.Observe(P.LeaderRequest(name=b"late"), timeout=5)

            def observe():
                try:
                    for m in obs:
                        got.append((m.kv.value, m.header.revision == m.kv.mod_revision))
                except grpc.RpcError:
                    pass
            t = threading.Thread(target=observe, daemon=True)
            t.start()
            time.sleep(0.5)
            st.el.Campaign(P.CampaignRequest(name=b"late", lease=st.grant(), value=b"v1"), timeout=5)
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                time.sleep(0.05)
            obs.cancel()
            return got
        finally:
            st.close()
    assert run(server) == run(ref_etcd) == [(b"v1", True)]


# ---------------------------------------------------------------------------
# Debian's etcdctl and python3-etcd3 (client-side recipes)

def etcdctl_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def etcdctl_popen(srv, *args):
    return subprocess.Popen([ETCDCTL, "--endpoints=%s" % srv.endpoint] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=etcdctl_env())


def test_etcdctl_lock_exec(server, ref_etcd):
    outs = []
    for srv in (server, ref_etcd):
        r = srv.etcdctl("lock", "mylock", "--", "sh", "-c", "echo hi $ETCD_LOCK_KEY")
        assert r.returncode == 0, r.stderr
        outs.append(re.sub(r"[0-9a-f]+$", "ID", r.stdout.strip()))
        assert srv.etcdctl("get", "--prefix", "mylock").stdout == ""
    assert outs[0] == outs[1] == "hi mylock/ID"


def test_etcdctl_elect(server, ref_etcd):
    outs = []
    for srv in (server, ref_etcd):
        p = etcdctl_popen(srv, "elect", "myelection", "candidate-a")
        try:
            lines = [p.stdout.readline().strip(), p.stdout.readline().strip()]
            r = srv.etcdctl("get", "--prefix", "myelection/")
            assert r.stdout.split("\n")[1] == "candidate-a"
        finally:
            p.send_signal(signal.SIGINT)
            p.wait(10)
        assert p.returncode == 0, p.stderr.read()
        assert srv.etcdctl("get", "--prefix", "myelection/").stdout == ""  # resigned
        outs.append([re.sub(r"/[0-9a-f]+$", "/ID", x) for x in lines])
    assert outs[0] == outs[1] == ["myelection/ID", "candidate-a"]


def test_etcdctl_lock_contended(server):
    if not has_watch(server):
        pytest.skip("etcdctl's mutex waits with Watch, which the server does not serve yet")
    first = etcdctl_popen(server, "lock", "mylock")
    try:
        key1 = first.stdout.readline().strip()
        assert key1.startswith("mylock/")
        stamps = []
        waiters = []
        for i in range(3):
            p = etcdctl_popen(server, "lock", "mylock", "--", "sh", "-c",
                              "echo %d; sleep 0.3" % i)
            waiters.append(p)
            deadline = time.monotonic() + 5
            while (len(server.etcdctl("get", "--prefix", "mylock/", "--keys-only")
                       .stdout.split()) < i + 2 and time.monotonic() < deadline):
                time.sleep(0.05)
        time.sleep(0.3)
        assert all(p.poll() is None for p in waiters)
        first.send_signal(signal.SIGINT)
        first.wait(10)
        for i, p in enumerate(waiters):
            out, err = p.communicate(timeout=20)
            assert p.returncode == 0, err
            stamps.append((time.monotonic(), out.strip()))
        assert [s[1] for s in stamps] == ["0", "1", "2"]
    finally:
        for p in [first] + locals().get("waiters", []):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_etcdctl_elect_listen(server):
    if not has_watch(server):
        pytest.skip("etcdctl's observer waits with Watch, which the server does not serve yet")
    lst = etcdctl_popen(server, "elect", "-l", "myelection")
    a = etcdctl_popen(server, "elect", "myelection", "candidate-a")
    b = None
    try:
        assert lst.stdout.readline().strip().startswith("myelection/")
        assert lst.stdout.readline().strip() == "candidate-a"
        b = etcdctl_popen(server, "elect", "myelection", "candidate-b")
        time.sleep(0.5)
        a.send_signal(signal.SIGINT)
        a.wait(10)
        assert lst.stdout.readline().strip().startswith("myelection/")
        assert lst.stdout.readline().strip() == "candidate-b"
    finally:
        for p in (lst, a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def test_python_etcd3_lock(server):
    """python3-etcd3's Lock: txn on /locks/<name> with a lease. Debian's
    python3-etcd3 cannot wait for a held lock (its retry `wait` callback no
    longer fits Debian's tenacity: TypeError, against real etcd as well), so
    the threads take the lock one after the other."""
    host, port = server.endpoint.split(":")
    held, spans = threading.Event(), []

    def worker(i):
        c = etcd3.client(host=host, port=int(port))
        try:
            with c.lock("plock", ttl=5) as lk:
                assert lk.is_acquired()
                v, meta = c.get("/locks/plock")
                assert v == lk.uuid and meta.lease_id == lk.lease.id
                spans.append(i)
                held.set()
                time.sleep(0.2)
        finally:
            c.close()
    t1 = threading.Thread(target=worker, args=(1,))
    t1.start()
    held.wait(5)
    c = etcd3.client(host=host, port=int(port))
    try:
        other = c.lock("plock", ttl=5)
        assert other.is_acquired() is False
        t1.join(10)
        assert c.get("/locks/plock")[0] is None  # released
        t2 = threading.Thread(target=worker, args=(2,))
        t2.start()
        t2.join(10)
    finally:
        c.close()
    assert spans == [1, 2]
