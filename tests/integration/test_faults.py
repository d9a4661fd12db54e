"""Proof under faults: 3- and 5-member clusters whose peer (and
member-to-member client) traffic goes through fault proxies
(tests/tools/faultproxy.py), clients on every member recording every
operation, a watch on every member; after each fault schedule the
history is checked (tests/lincheck.py): linearizable per key, revisions
consistent with real time, no acknowledged write lost, watches ordered,
gap-free, duplicate-free and the same on every member.

Faults: leader kill -9 (and restart), a minority partitioned away, a
partitioned leader (blackholed: connections stay up, nothing arrives),
a paused leader (SIGSTOP while the others elect, then SIGCONT), every
member killed at once (power loss) and restarted,
no majority anywhere (every member alone) then heal, slow links; and a
5-member cluster with the leader on the minority side.

Nothing here asserts a timing; every wait is bounded.
Run:  /usr/bin/python3 -m pytest -q tests/integration/test_faults.py
"""

import os
import sys
import time
import zlib

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import _test_deadline  # noqa: E402,F401
from faultlib import FaultCluster, Workload  # noqa: E402

RUN = float(os.environ.get("KETCH_FAULT_PHASE", "3"))   # seconds per phase


@pytest.fixture
def cluster3(request):
    fc = FaultCluster(3, label="flt3")
    request.addfinalizer(fc.cleanup)
    return fc.start()


@pytest.fixture
def cluster5(request):
    fc = FaultCluster(5, label="flt5")
    request.addfinalizer(fc.cleanup)
    return fc.start()


def run_and_check(fc, name, schedule, min_ok=50):
    wl = Workload(fc, prefix="%s/" % name, seed=zlib.crc32(name.encode())).start()
    try:
        time.sleep(RUN)
        schedule(fc)
        time.sleep(RUN)
    except BaseException:
        wl.stop_clients()
        raise
    anomalies = wl.finish()
    print("\n%s: %s; faults: %s" % (name, wl.summary(), [w for _, w in fc.log]))
    assert not anomalies, "%s: %d anomalies:\n%s\nfaults: %s" % (
        name, len(anomalies), "\n".join(anomalies[:10]), fc.log)
    assert wl.counts["ok"] >= min_ok, wl.summary()
    return wl


def leader_kill(fc):
    leader = fc.leader()
    fc.kill(leader)
    time.sleep(RUN)
    fc.leader()                      # the others elect one
    time.sleep(RUN)
    fc.restart(leader)


def minority_partition(fc):
    leader = fc.leader()
    f = next(m for m in fc.members if m is not leader)
    fc.note("isolate follower %s" % f.name)
    fc.net.isolate(f.name)
    time.sleep(2 * RUN)
    fc.note("heal")
    fc.net.heal()


def partitioned_leader(fc):
    leader = fc.leader()
    fc.note("blackhole leader %s" % leader.name)
    fc.net.isolate(leader.name, mode="blackhole")
    others = [m for m in fc.members if m is not leader]
    fc.leader(among=others)          # the majority elects a new leader
    time.sleep(RUN)
    fc.note("heal")
    fc.net.heal()


def no_majority(fc):
    fc.note("every member alone")
    fc.net.partition([[m.name] for m in fc.members])
    time.sleep(2 * RUN)
    fc.note("heal")
    fc.net.heal()
    fc.leader()


def paused_leader(fc):
    leader = fc.leader()
    fc.pause(leader)
    try:
        fc.leader(among=[m for m in fc.members if m is not leader])
        time.sleep(RUN)
    finally:
        fc.resume(leader)


def all_killed(fc):
    """Power loss: kill -9 every member at once, restart them all."""
    for m in fc.members:
        fc.kill(m)
    time.sleep(1)
    for m in fc.members:
        fc.note("restart %s" % m.name)
        fc.killed.discard(m.name)
        m.restart(wait=False)
        fc.net.register(m.name, m.proc.pid)
    fc.leader()


def slow_links(fc):
    fc.note("delay 50ms everywhere")
    names = [m.name for m in fc.members]
    for a in names:
        for b in names:
            if a != b:
                fc.net.set_rule(a, b, ("delay", 0.05))
    time.sleep(2 * RUN)
    fc.net.heal()


@pytest.mark.parametrize("fault", [leader_kill, minority_partition, partitioned_leader,
                                   no_majority, paused_leader, all_killed, slow_links],
                         ids=lambda f: f.__name__)
def test_three_members(cluster3, fault):
    run_and_check(cluster3, fault.__name__, fault)


def test_five_members(cluster5):
    def schedule(fc):
        leader = fc.leader()
        f = next(m for m in fc.members if m is not leader)
        minority = [leader.name, f.name]
        majority = [m.name for m in fc.members if m.name not in minority]
        fc.note("partition %s | %s" % (minority, majority))
        fc.net.partition([minority, majority])
        fc.leader(among=[m for m in fc.members if m.name in majority])
        time.sleep(RUN)
        fc.note("heal")
        fc.net.heal()
        time.sleep(RUN)
        leader_kill(fc)
    run_and_check(cluster5, "five", schedule)


def test_leases_and_watch_survive_leader_changes(cluster3):
    """A lease kept alive through a follower outlives a leader kill -9 and a
    partitioned leader; its key stays; the recorded workload and the
    watches on every member pass their checks meanwhile; once the
    keep-alives stop the lease expires and its key goes on every member."""
    import grpc
    import threading
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    fc = cluster3
    leader = fc.leader()
    f = next(m for m in fc.members if m is not leader)
    ch = grpc.insecure_channel(f.endpoint)
    kv = rpc_pb2_grpc.KVStub(ch)
    lease = rpc_pb2_grpc.LeaseStub(ch)
    lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=6), timeout=10).ID
    kv.Put(rpc_pb2.PutRequest(key=b"leased", value=b"v", lease=lid), timeout=10)
    wl = Workload(fc, prefix="lease/", seed=5, clients_per_member=1, keys=4).start()
    stop = threading.Event()
    ok = [0]

    def keepalive():
        while not stop.is_set():
            try:
                for r in lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lid)]),
                                              timeout=2):
                    if r.TTL > 0:
                        ok[0] += 1
            except grpc.RpcError:
                pass
            stop.wait(0.5)
    t = threading.Thread(target=keepalive, daemon=True)
    t.start()
    try:
        fc.kill(leader)
        time.sleep(RUN)
        fc.restart(leader)
        time.sleep(RUN)
        ld = fc.leader()
        fc.note("blackhole leader %s" % ld.name)
        fc.net.isolate(ld.name, mode="blackhole")
        fc.leader(among=[m for m in fc.members if m is not ld])
        time.sleep(RUN)
        fc.net.heal()
        fc.note("heal")
        time.sleep(RUN)
        # the lease lived through it all
        for m in fc.members:
            c = grpc.insecure_channel(m.endpoint)
            try:
                r = rpc_pb2_grpc.KVStub(c).Range(rpc_pb2.RangeRequest(key=b"leased"), timeout=10)
                assert [(x.value, x.lease) for x in r.kvs] == [(b"v", lid)], (m.name, r)
            finally:
                c.close()
        assert ok[0] > 0
    finally:
        stop.set()
        t.join(10)
    anomalies = wl.finish()
    assert not anomalies, "\n".join(anomalies[:10])
    # keep-alives stopped: the lease expires and its key goes, on every member
    deadline = time.monotonic() + 60
    while True:
        gone = []
        for m in fc.members:
            c = grpc.insecure_channel(m.endpoint)
            try:
                r = rpc_pb2_grpc.KVStub(c).Range(rpc_pb2.RangeRequest(key=b"leased"), timeout=10)
                gone.append(not r.kvs)
            finally:
                c.close()
        if all(gone):
            break
        assert time.monotonic() < deadline, "the lease never expired: %r" % gone
        time.sleep(0.2)
    ch.close()


def test_keepalive_through_follower_answers_before_half_close(cluster3):
    """A LeaseKeepAlive stream that sends one request and half-closes gets
    its answer on every member, as from etcd (a follower used to end the
    stream before the leader's answer came back, dropping it)."""
    import grpc
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    for m in cluster3.members:
        ch = grpc.insecure_channel(m.endpoint)
        try:
            lease = rpc_pb2_grpc.LeaseStub(ch)
            lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10).ID
            for _ in range(10):
                rs = list(lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lid)]),
                                               timeout=10))
                assert [(r.ID, r.TTL) for r in rs] == [(lid, 60)], (m.name, rs)
        finally:
            ch.close()
