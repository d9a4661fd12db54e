"""Proof under faults: 3- and 5-member clusters whose peer (and
member-to-member client) traffic goes through fault proxies
(tests/tools/faultproxy.py), clients on every member recording every
operation, a watch on every member; after each fault schedule the
history is checked (tests/lincheck.py): linearizable per key, revisions
consistent with real time, no acknowledged write lost, watches ordered,
gap-free, duplicate-free and the same on every member.

Faults: leader kill -9 (and restart), a minority partitioned away, a
partitioned leader (blackholed: connections stay up, nothing arrives),
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
                                   no_majority, slow_links], ids=lambda f: f.__name__)
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
