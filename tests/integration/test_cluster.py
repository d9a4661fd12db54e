"""Clusters of several members on 127.0.0.1 (static bootstrap as etcd's
--initial-cluster), driven with Debian's etcdctl and python3-etcd3.

Every wait polls for a condition with a generous bound; nothing here
asserts a timing.

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_cluster.py
"""

import json
import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import (ETCD, ClusterMember, _test_deadline, run_etcdctl,  # noqa: E402,F401
                     start_cluster)

import etcd3  # noqa: E402


def ctl_json(member, *args):
    r = member.etcdctl(*args, "-w", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def statuses(members):
    """Maintenance.Status of every running member, by name."""
    out = {}
    for m in members:
        if m.running():
            out[m.name] = ctl_json(m, "endpoint", "status")[0]["Status"]
    return out


def wait_for(cond, timeout=30, what="condition", step=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # a member may be electing: keep polling
            last = e
        time.sleep(step)
    raise AssertionError("timed out waiting for %s (last error %r)" % (what, last))


def leader_of(members):
    """The running member every running member agrees is the leader."""
    def agreed():
        st = statuses(members)
        leaders = {s["leader"] for s in st.values()}
        if len(leaders) != 1 or 0 in leaders:
            return None
        lid = leaders.pop()
        for m in members:
            if m.running() and st[m.name]["header"]["member_id"] == lid:
                return m
        return None
    return wait_for(agreed, what="an agreed leader")


def client(member):
    return etcd3.client(host="127.0.0.1", port=member.client_port, timeout=10)


def test_static_cluster_follower_writes(request):
    ms = start_cluster(request, 3)
    leader = leader_of(ms)
    followers = [m for m in ms if m is not leader]

    # writes on followers are forwarded to the leader; reads everywhere
    for i, f in enumerate(followers):
        r = f.etcdctl("put", "k%d" % i, "v%d" % i)
        assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr
    for m in ms:
        r = m.etcdctl("get", "k", "--prefix")  # linearizable
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["k0", "v0", "k1", "v1"]
    for m in ms:  # serializable: local, catches up by itself
        wait_for(lambda: m.etcdctl("get", "k1", "--consistency=s").stdout.split() == ["k1", "v1"],
                 what="serializable read on %s" % m.name)

    # one revision history: the same revision everywhere
    revs = {ctl_json(m, "get", "k0")["header"]["revision"] for m in ms}
    assert len(revs) == 1

    # member list: every member with its peer and (published) client URLs
    for m in ms:
        ml = wait_for(lambda: (lambda j: j if all(x.get("clientURLs") for x in j["members"])
                               else None)(ctl_json(m, "member", "list")),
                      what="client URLs published")
        got = sorted((x["name"], x["peerURLs"], x["clientURLs"]) for x in ml["members"])
        assert got == sorted((x.name, [x.peer_url], [x.client_url]) for x in ms)
        assert len({x["ID"] for x in ml["members"]}) == 3

    # endpoint status --cluster: one row per member, exactly one leader,
    # one term, one cluster ID
    st = ctl_json(followers[0], "endpoint", "status", "--cluster")
    assert sorted(x["Endpoint"] for x in st) == sorted(m.client_url for m in ms)
    assert len({x["Status"]["leader"] for x in st}) == 1
    assert len({x["Status"]["header"]["cluster_id"] for x in st}) == 1
    assert len({x["Status"]["raftTerm"] for x in st}) == 1
    ids = {x["Status"]["header"]["member_id"] for x in st}
    assert st[0]["Status"]["leader"] in ids

    # a txn and a delete through a follower
    c = client(followers[1])
    try:
        ok, _ = c.transaction(compare=[c.transactions.value("k0") == "v0"],
                              success=[c.transactions.put("t", "yes")], failure=[])
        assert ok
        assert c.delete("k1")
    finally:
        c.close()
    c = client(leader)
    try:
        assert c.get("t")[0] == b"yes"
        assert c.get("k1")[0] is None
    finally:
        c.close()


def test_shape_matches_real_etcd(request):
    """`member list` and `endpoint status --cluster` of a 3-member ketch
    cluster have the fields a 3-member real etcd cluster has."""
    sut = start_cluster(request, 3, label="sut")
    ref = start_cluster(request, 3, binary=ETCD, tmpfs=True, label="ref")

    def keys(obj):
        if isinstance(obj, dict):
            return {k: keys(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [keys(obj[0])] if obj else []
        return type(obj).__name__

    for cl in (sut, ref):
        wait_for(lambda: all(x.get("clientURLs") for x in
                             ctl_json(cl[0], "member", "list")["members"]), what="published")
    ml_s, ml_r = (ctl_json(cl[1], "member", "list") for cl in (sut, ref))
    assert keys(ml_s) == keys(ml_r)
    assert len(ml_s["members"]) == len(ml_r["members"]) == 3
    st_s, st_r = (ctl_json(cl[1], "endpoint", "status", "--cluster") for cl in (sut, ref))
    assert len(st_s) == len(st_r) == 3
    assert keys(st_s[0]["Status"]["header"]) == keys(st_r[0]["Status"]["header"])
    # etcd 3.4 has no raftAppliedIndex / dbSizeInUse: ours may have more
    assert set(keys(st_r[0]["Status"])) <= set(keys(st_s[0]["Status"]))
    for st in (st_s, st_r):
        assert sum(1 for x in st if x["Status"]["leader"] == x["Status"]["header"]["member_id"]) == 1
    tab_s = sut[0].etcdctl("member", "list", "-w", "table").stdout.splitlines()
    tab_r = ref[0].etcdctl("member", "list", "-w", "table").stdout.splitlines()
    assert tab_s[1] == tab_r[1] and len(tab_s) == len(tab_r)


def test_leases_and_watch_on_followers(request):
    ms = start_cluster(request, 3)
    leader = leader_of(ms)
    f1, f2 = [m for m in ms if m is not leader]
    c1, c2 = client(f1), client(f2)
    try:
        # a watch on one follower sees a write made through the other
        events, cancel = c2.watch("w")
        lease = c1.lease(30)
        c1.put("w", "1", lease=lease)
        ev = next(events)
        assert ev.key == b"w" and ev.value == b"1"
        cancel()

        # keep-alive and TTL through followers (forwarded to the leader)
        assert 0 < c2.get_lease_info(lease.id).TTL <= 30
        for r in c2.refresh_lease(lease.id):
            assert r.TTL == 30
        info = c1.get_lease_info(lease.id)
        assert 0 < info.TTL <= 30 and info.grantedTTL == 30
        # a revoke through a follower deletes the key everywhere
        c2.revoke_lease(lease.id)
        for m in ms:
            r = m.etcdctl("get", "w")
            assert r.returncode == 0 and r.stdout == ""
    finally:
        c1.close()
        c2.close()


def test_leader_kill_loses_no_acknowledged_write(request):
    ms = start_cluster(request, 3)
    leader = leader_of(ms)
    acked = []
    errors = []
    stop = threading.Event()
    killed = threading.Event()
    after_kill = [0]

    def writer(member, tag):
        c = client(member)
        i = 0
        try:
            while not stop.is_set():
                key = "ack/%s/%05d" % (tag, i)
                i += 1
                try:
                    c.put(key, "x")
                except Exception as e:  # during the election: not acknowledged
                    errors.append(repr(e))
                    time.sleep(0.05)
                    continue
                acked.append(key)
                if killed.is_set():
                    after_kill[0] += 1
        finally:
            c.close()

    threads = [threading.Thread(target=writer, args=(m, m.name)) for m in ms if m is not leader]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acked) >= 50, what="writes before the kill")
        leader.kill()  # kill -9
        killed.set()
        wait_for(lambda: after_kill[0] >= 50, timeout=60, what="writes after the kill")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    survivors = [m for m in ms if m is not leader]
    new_leader = leader_of(survivors)
    assert new_leader is not leader
    for m in survivors:
        got = set(kv[1].key.decode() for kv in client(m).get_prefix("ack/"))
        missing = [k for k in acked if k not in got]
        assert not missing, "%s lost %d acknowledged writes, e.g. %s" % (m.name, len(missing),
                                                                        missing[:5])

    # the killed member restarts on its data dir and catches up
    leader.restart(wait=False)
    leader.wait_ready(timeout=30)
    want = len(acked)
    wait_for(lambda: count(leader, "ack/", serializable=True)[0] >= want,
             what="the restarted member catching up")
    revs = {count(m, "ack/")[1] for m in ms}
    assert len(revs) == 1


def count(member, prefix, serializable=False):
    """(number of keys under prefix, header revision) from one member."""
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ch = member.channel()
    try:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(
            key=prefix.encode(), range_end=end.encode(), count_only=True,
            serializable=serializable), timeout=10)
        return r.count, r.header.revision
    finally:
        ch.close()


def add_member(request, ms, name, learner):
    """etcdctl member add through a follower, then start the new member
    with --initial-cluster-state existing. Returns (member, its ID)."""
    new = ClusterMember(name, "sut-" + name)
    request.addfinalizer(new.cleanup)
    args = ["member", "add", name, "--peer-urls=" + new.peer_url]
    if learner:
        args.append("--learner")
    r = ms[-1].etcdctl(*args)
    assert r.returncode == 0, r.stderr
    assert 'ETCD_INITIAL_CLUSTER_STATE="existing"' in r.stdout
    ic = [line.split("=", 1)[1].strip('"') for line in r.stdout.splitlines()
          if line.startswith("ETCD_INITIAL_CLUSTER=")][0]
    mid = int(r.stdout.split()[1], 16)
    new.initial_cluster = ic
    new.cluster_state = "existing"
    new.start(wait=False)
    return new, mid


def test_membership_changes_while_writing(request):
    ms = start_cluster(request, 3)
    acked = []
    stop = threading.Event()

    def writer(member):
        c = client(member)
        i = 0
        try:
            while not stop.is_set():
                key = "mw/%s/%05d" % (member.name, i)
                i += 1
                try:
                    c.put(key, "x")
                    acked.append(key)
                except Exception:
                    time.sleep(0.05)
        finally:
            c.close()

    threads = [threading.Thread(target=writer, args=(m,)) for m in ms[1:]]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acked) >= 20, what="writes")
        # a learner joins under writes, replicates, answers serializable
        # reads, is promoted. That a learner does not vote and a promoted
        # one does is proven in test_cluster_election.py
        # (test_learner_does_not_vote_until_promoted); here the promoted
        # member must at least take the leadership below (libraft hands it
        # only to a voter) and keep the writes going after the old leader
        # is removed.
        m4, id4 = add_member(request, ms, "m4", learner=True)
        # (member list is served locally: a follower may apply the add a
        # moment after the leader answered it)
        wait_for(lambda: [x.get("isLearner", False) for x in
                          ctl_json(ms[0], "member", "list")["members"] if x["ID"] == id4] == [True],
                 what="the learner in the member list")
        want = len(acked)
        wait_for(lambda: count(m4, "mw/", serializable=True)[0] >= want, what="the learner")
        st = ctl_json(m4, "endpoint", "status")[0]["Status"]
        assert st.get("isLearner") is True
        wait_for(lambda: ms[0].etcdctl("member", "promote", "%x" % id4).returncode == 0,
                 what="promotion")
        # ms[1] may apply the promotion a moment after ms[0] answered it
        wait_for(lambda: (lambda ml: all(not x.get("isLearner", False) for x in ml) and len(ml) == 4)(
            ctl_json(ms[1], "member", "list")["members"]), what="the promotion on ms[1]")

        # a learner can be added and removed again
        r = ms[1].etcdctl("member", "add", "spare", "--learner", "--peer-urls=http://127.0.0.1:9")
        assert r.returncode == 0, r.stderr
        sid = int(r.stdout.split()[1], 16)
        r = ms[1].etcdctl("member", "add", "again", "--learner", "--peer-urls=http://127.0.0.1:9")
        assert r.returncode != 0 and "Peer URLs already exists" in r.stderr
        r = ms[2].etcdctl("member", "remove", "%x" % sid)
        assert r.returncode == 0, r.stderr

        # move the leadership to the new member, then remove the old leader
        everyone = ms + [m4]
        old = leader_of(everyone)
        # (if m4 already leads, it won an election: a voter too)
        target = m4 if old is not m4 else ms[1]
        tid = ctl_json(target, "endpoint", "status")[0]["Status"]["header"]["member_id"]
        eps = ",".join(m.endpoint for m in everyone)
        wait_for(lambda: run_etcdctl(eps, "move-leader", "%x" % tid).returncode == 0,
                 what="move-leader")
        assert leader_of(everyone) is target
        old_id = ctl_json(old, "endpoint", "status")[0]["Status"]["header"]["member_id"]
        r = target.etcdctl("member", "remove", "%x" % old_id)
        assert r.returncode == 0, r.stderr
        remaining = [m for m in ms + [m4] if m is not old]
        want_ids = sorted(ctl_json(m, "endpoint", "status")[0]["Status"]["header"]["member_id"]
                          for m in remaining)
        for m in remaining:  # MemberList is local: each applies the removal
            wait_for(lambda: sorted(x["ID"] for x in ctl_json(m, "member", "list")["members"])
                     == want_ids, what="the removal on %s" % m.name)
        old.stop()
        before = len(acked)
        wait_for(lambda: len(acked) >= before + 20, what="writes after the removal")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    remaining = [m for m in ms + [m4] if m is not old]
    for m in remaining:
        got = set(kv[1].key.decode() for kv in client(m).get_prefix("mw/"))
        missing = [k for k in acked if k not in got]
        assert not missing, "%s lost %d acknowledged writes" % (m.name, len(missing))


def test_five_members_survive_two_failures(request):
    ms = start_cluster(request, 5)
    leader = leader_of(ms)
    r = ms[0].etcdctl("put", "five", "1")
    assert r.returncode == 0, r.stderr
    others = [m for m in ms if m is not leader]
    leader.kill()
    others[0].kill()
    alive = others[1:]
    wait_for(lambda: alive[0].etcdctl("put", "five", "2").returncode == 0,
             what="a write with 3 of 5 members")
    for m in alive:
        assert m.etcdctl("get", "five", "--print-value-only").stdout.strip() == "2"
