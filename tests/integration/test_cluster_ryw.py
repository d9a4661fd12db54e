"""Read-your-writes on a follower, checked against a real etcd cluster.

etcd's member answers a write only after its own apply of the entry
(etcdserver/v3_server.go: processInternalRaftRequestOnce waits on
s.w.Register(id), triggered by its applier), so a serializable read, a
LeaseLeases or a watch from the write's revision sent to the same member
right after the answer sees the write. ketch's follower answers a
forwarded write at the leader's apply, remembers the entry's index, and
its local reads wait until its store has applied that far.

Without the wait, a ketch follower misses its own write most of the time:
it learns that the entry committed only with the leader's next message
(the next heartbeat, up to --heartbeat-interval later), and with the
leader->follower traffic delayed (tests/tools/faultproxy.py) it misses it
every time. Nothing here asserts a timing.

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_cluster_ryw.py
"""

import os
import sys
import time

import grpc
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import ETCD, _test_deadline, server_under_test_binary, start_cluster  # noqa: E402,F401
from faultlib import FaultCluster  # noqa: E402
from test_cluster_election import IMPLS, binary_of, status  # noqa: E402

from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402

ROUNDS = 100


def a_follower(ms, timeout=30):
    """(leader, a follower) once every member names the same leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sts = {m.name: status(m) for m in ms}
            leaders = {s.leader for s in sts.values()}
            if len(leaders) == 1 and 0 not in leaders:
                lid = leaders.pop()
                leader = next(m for m in ms if sts[m.name].header.member_id == lid)
                return leader, next(m for m in ms if m is not leader)
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    raise AssertionError("no agreed leader")


def get(k, key):
    r = k.Range(rpc_pb2.RangeRequest(key=key, serializable=True), timeout=10)
    return [(kv.value, kv.mod_revision) for kv in r.kvs]


def check_rounds(f, prefix, rounds):
    """Put, then at once a serializable get (and every tenth round a
    serializable read-only txn, then a delete and a get) on member f.
    Returns the rounds that did not see their own write."""
    ch = f.channel()
    k = rpc_pb2_grpc.KVStub(ch)
    missed = []
    try:
        for i in range(rounds):
            key = b"%s%d" % (prefix, i % 7)
            val = b"v%d" % i
            rev = k.Put(rpc_pb2.PutRequest(key=key, value=val), timeout=10).header.revision
            got = get(k, key)
            if got != [(val, rev)]:
                missed.append(("get", i, rev, got))
            if i % 10 == 0:
                t = k.Txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
                    request_range=rpc_pb2.RangeRequest(key=key, serializable=True))]),
                    timeout=10)
                tk = [(kv.value, kv.mod_revision) for kv in t.responses[0].response_range.kvs]
                if tk != [(val, rev)]:
                    missed.append(("txn", i, rev, tk))
                k.DeleteRange(rpc_pb2.DeleteRangeRequest(key=key), timeout=10)
                got = get(k, key)
                if got:
                    missed.append(("get after delete", i, rev, got))
    finally:
        ch.close()
    return missed


@pytest.mark.parametrize("impl", IMPLS)
def test_follower_reads_its_own_writes(request, impl):
    ms = start_cluster(request, 3, binary=binary_of(impl), tmpfs=impl == "etcd",
                       label="%s-ryw" % impl)
    _, f = a_follower(ms)
    missed = check_rounds(f, b"ryw/", ROUNDS)
    assert not missed, "%s: %d reads (of %d rounds) missed their own write on follower %s: %s" % (
        impl, len(missed), ROUNDS, f.name, missed[:5])


@pytest.mark.parametrize("impl", IMPLS)
def test_follower_lists_its_own_lease_and_watches_its_own_write(request, impl):
    ms = start_cluster(request, 3, binary=binary_of(impl), tmpfs=impl == "etcd",
                       label="%s-rywl" % impl)
    _, f = a_follower(ms)
    ch = f.channel()
    try:
        # a lease granted through the follower is listed by it at once
        ls = rpc_pb2_grpc.LeaseStub(ch)
        for _ in range(20):
            lid = ls.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10).ID
            have = [x.ID for x in ls.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=10).leases]
            assert lid in have, (impl, lid, have)
        # a watch created on the follower from its write's revision
        # delivers that write
        k = rpc_pb2_grpc.KVStub(ch)
        w = rpc_pb2_grpc.WatchStub(ch)
        for i in range(5):
            rev = k.Put(rpc_pb2.PutRequest(key=b"rw/w", value=b"%d" % i),
                        timeout=10).header.revision
            reqs = iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                key=b"rw/w", start_revision=rev))])
            stream = w.Watch(reqs, timeout=10)
            evs = []
            for resp in stream:
                evs += [(e.kv.value, e.kv.mod_revision) for e in resp.events]
                if evs:
                    break
            stream.cancel()
            assert evs[0] == (b"%d" % i, rev), (impl, evs)
    finally:
        ch.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_follower_reads_its_own_writes_when_it_learns_the_commit_late(request, impl):
    """The leader's traffic to the follower is delayed by 0.3 s, so the
    follower hears that its write committed a while after the leader
    applied it."""
    fc = FaultCluster(3, label="%s-rywd" % impl,
                      extra_args=["--heartbeat-interval", "100", "--election-timeout", "2000"])
    if impl == "etcd":
        for m in fc.members:
            m.binary = ETCD
    request.addfinalizer(fc.cleanup)
    fc.start()
    leader, f = a_follower(fc.members)
    fc.net.set_rule(leader.name, f.name, ("delay", 0.3))
    missed = check_rounds(f, b"rywd/", 10)
    # the delay held the whole time: no election
    assert a_follower(fc.members)[0] is leader
    assert not missed, "%s: %d reads (of 10 rounds) missed their own write on follower %s: %s" % (
        impl, len(missed), f.name, missed[:5])
