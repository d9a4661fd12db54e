"""Members that fall behind catch up: through a snapshot that carries the
whole store (--snapshot-count small, so the leader's log no longer holds
what they miss), after their data dir was wiped and they were re-added,
and as learners promoted once they caught up.

Every wait polls for a condition with a generous bound; nothing here
asserts a timing.

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_cluster_catchup.py
"""

import os
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ClusterMember, _test_deadline, start_cluster  # noqa: E402,F401
from test_cluster import (add_member, client, count, ctl_json, leader_of,  # noqa: E402
                          wait_for)

SNAP = ["--snapshot-count", "100"]


def dump(member, prefix, rev):
    """Every key-value under prefix at revision rev, serializable (local)."""
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ch = member.channel()
    try:
        # "\0": every key
        end = "\0" if prefix == "\0" else prefix[:-1] + chr(ord(prefix[-1]) + 1)
        r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(
            key=prefix.encode(), range_end=end.encode(), revision=rev,
            serializable=True), timeout=10)
        return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                for kv in r.kvs]
    finally:
        ch.close()


def watch_keys(member, prefix, rev, n):
    """The keys of the first n events of a watch on prefix from rev."""
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ch = member.channel()
    try:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=prefix.encode(), range_end=end.encode(), start_revision=rev))
        got = []
        stream = rpc_pb2_grpc.WatchStub(ch).Watch(iter([req]), timeout=10)
        for resp in stream:
            got += [ev.kv.key for ev in resp.events]
            if len(got) >= n:
                break
        stream.cancel()
        return got[:n]
    finally:
        ch.close()


def put_many(member, prefix, n, start=0):
    c = client(member)
    try:
        for i in range(start, start + n):
            c.put("%s%05d" % (prefix, i), "v%d" % i)
    finally:
        c.close()


def snapshots_sent(member):
    with open(member.log_path, "rb") as f:
        return f.read().count(b"sending a snapshot")


def installed(member):
    with open(member.log_path, "rb") as f:
        return f.read().count(b"snapshot installed")


def test_member_down_catches_up_through_a_snapshot(request):
    ms = start_cluster(request, 3, extra_args=SNAP)
    leader = leader_of(ms)
    lagger = [m for m in ms if m is not leader][0]
    put_many(leader, "a/", 20)
    lagger.stop()

    # far more than --snapshot-count entries (and the trailing log) while
    # it is down: the leader compacts its log past what the lagger has
    put_many(leader, "b/", 600)
    c = client(leader)
    lease = c.lease(3600)
    c.put("leased", "x", lease=lease)
    c.delete("b/00001")
    c.close()

    lagger.restart(wait=False)
    lagger.wait_ready(timeout=60)
    _, rev = count(leader, "b/")
    wait_for(lambda: count(lagger, "b/", serializable=True)[1] >= rev, timeout=60,
             what="the restarted member catching up")
    assert installed(lagger) >= 1, lagger.log_tail()
    assert sum(snapshots_sent(m) for m in ms) >= 1

    # endpoint status --cluster from the member that caught up: every
    # member, one leader, one term, indexes that agree once writes stop
    def settled():
        st = ctl_json(lagger, "endpoint", "status", "--cluster")
        ss = [x["Status"] for x in st]
        ok = (len(ss) == 3 and len({x["leader"] for x in ss}) == 1 and
              len({x["raftTerm"] for x in ss}) == 1 and
              len({x["raftIndex"] for x in ss}) == 1 and
              all(x["raftAppliedIndex"] == x["raftIndex"] for x in ss))
        return ss if ok else None
    ss = wait_for(settled, what="endpoint status --cluster to agree")
    assert ss[0]["leader"] in {x["header"]["member_id"] for x in ss}

    # the same data at the same revision on every member
    want = dump(leader, "\0", rev)
    assert len(want) == 20 + 600 - 1 + 1
    for m in ms:
        assert dump(m, "\0", rev) == want, m.name
    # leases came along: the lagger knows the lease and its keys
    lc = client(lagger)
    try:
        ttl = lc.get_lease_info(lease.id)
        assert ttl.TTL > 0 and [k for k in ttl.keys] == [b"leased"]
        # and it keeps serving: writes through it, watch from an old revision
        lc.put("after", "1")
        got = watch_keys(lagger, "b/0000", 1, 10)
        assert got[0] == b"b/00000"
    finally:
        lc.close()

    # restart once more: its snapshot on disk is not re-installed over newer data
    lagger.restart(wait=False)
    lagger.wait_ready(timeout=60)
    wait_for(lambda: dump(lagger, "after", 0) == dump(leader, "after", 0), what="restart")
    for m in ms:
        assert dump(m, "\0", rev) == want, m.name


def test_wiped_member_is_removed_and_readded(request):
    ms = start_cluster(request, 3, extra_args=SNAP)
    leader = leader_of(ms)
    victim = [m for m in ms if m is not leader][0]
    put_many(leader, "w/", 300)

    victim.kill()
    shutil.rmtree(victim.data_dir)
    mid = ctl_json(victim if victim.running() else leader, "endpoint", "status")
    lst = ctl_json(leader, "member", "list")["members"]
    vid = [x["ID"] for x in lst if x["name"] == victim.name][0]
    r = leader.etcdctl("member", "remove", "%x" % vid)
    assert r.returncode == 0, r.stderr
    del mid
    others = [m for m in ms if m is not victim]
    put_many(others[0], "w/", 300, start=300)

    new, new_id = add_member(request, others, "m9", learner=False)
    new.wait_ready(timeout=60)
    _, rev = count(leader, "w/")
    wait_for(lambda: count(new, "w/", serializable=True)[1] >= rev, timeout=60,
             what="the re-added member catching up")
    want = dump(leader, "w/", rev)
    assert len(want) == 600
    assert dump(new, "w/", rev) == want
    assert installed(new) >= 1, new.log_tail()
    # every member (the new one published its client URL) with one leader
    st = wait_for(lambda: (lambda st: st if len(st) == 3 and len(
        {x["Status"]["leader"] for x in st}) == 1 else None)(
        ctl_json(new, "endpoint", "status", "--cluster")), what="endpoint status --cluster")
    assert sorted(x["Endpoint"] for x in st) == sorted(m.client_url for m in others + [new])
    # the joining member took the cluster's ID, not one derived from its flags
    assert len({x["Status"]["header"]["cluster_id"] for x in st}) == 1
    assert {x["Status"]["raftTerm"] for x in st} == {st[0]["Status"]["raftTerm"]}


def test_learner_catches_up_then_is_promoted(request):
    ms = start_cluster(request, 3, extra_args=SNAP)
    leader = leader_of(ms)
    put_many(leader, "l/", 400)
    new, new_id = add_member(request, ms, "m4", learner=True)
    new.wait_ready(timeout=60)
    _, rev = count(leader, "l/")
    wait_for(lambda: count(new, "l/", serializable=True)[1] >= rev, timeout=60,
             what="the learner catching up")
    assert dump(new, "l/", rev) == dump(leader, "l/", rev)
    assert installed(new) >= 1, new.log_tail()
    r = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(
        leader.etcdctl("member", "promote", "%x" % new_id)), what="promotion")
    assert "promoted" in r.stdout
    lst = ctl_json(leader, "member", "list")["members"]
    assert [x.get("isLearner", False) for x in lst if x["ID"] == new_id] == [False]
    # a voter now: writes still commit with one of the old members down
    ms[[i for i, m in enumerate(ms) if m is not leader][0]].stop()
    put_many(leader, "l2/", 5)
    wait_for(lambda: count(new, "l2/", serializable=True)[0] == 5, what="writes replicated")


def test_removed_member_stops_itself(request):
    ms = start_cluster(request, 3)
    leader = leader_of(ms)
    victim = [m for m in ms if m is not leader][0]
    put_many(leader, "r/", 10)
    lst = ctl_json(leader, "member", "list")["members"]
    wait_for(lambda: all(x.get("clientURLs") for x in
                         ctl_json(leader, "member", "list")["members"]), what="client URLs")
    vid = [x["ID"] for x in lst if x["name"] == victim.name][0]
    r = leader.etcdctl("member", "remove", "%x" % vid)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not victim.running(), timeout=60, what="the removed member to stop")
    with open(victim.log_path, "rb") as f:
        assert b"permanently removed from the cluster" in f.read()
    # the rest goes on
    others = [m for m in ms if m is not victim]
    put_many(others[1], "r/", 10, start=10)
    assert count(others[0], "r/")[0] == 20
    # restarted on its old data dir (which never saw its removal), it
    # learns it from the others and stops again
    victim.start(wait=False)
    wait_for(lambda: not victim.running(), timeout=60, what="the removed member to stop again")
    with open(victim.log_path, "rb") as f:
        assert f.read().count(b"permanently removed from the cluster") == 2
    assert count(others[0], "r/")[0] == 20


class Writers:
    """One writer thread per member given; records acknowledged keys."""

    def __init__(self, members, prefix):
        self.acked = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(m, "%s%s/" % (prefix, m.name)))
                        for m in members]

    def _run(self, member, prefix):
        c = client(member)
        i = 0
        try:
            while not self.stop.is_set():
                key = "%s%06d" % (prefix, i)
                i += 1
                try:
                    c.put(key, "x")
                except Exception:  # not acknowledged (election, member down)
                    time.sleep(0.05)
                    continue
                self.acked.append(key)
        finally:
            c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def assert_all_present(members, acked, prefix):
    _, rev = count(leader_of(members), prefix)
    for m in members:
        wait_for(lambda: count(m, prefix, serializable=True)[1] >= rev, timeout=60,
                 what="%s catching up" % m.name)
        got = set(kv[0].decode() for kv in dump(m, prefix, rev))
        missing = [k for k in acked if k not in got]
        assert not missing, "%s lost %d acknowledged writes, e.g. %s" % (
            m.name, len(missing), missing[:5])
    want = dump(members[0], prefix, rev)
    for m in members[1:]:
        assert dump(m, prefix, rev) == want, m.name


def test_five_members_two_killed_during_writes_catch_up(request):
    ms = start_cluster(request, 5, extra_args=SNAP)
    leader = leader_of(ms)
    victims = [m for m in ms if m is not leader][:2]
    survivors = [m for m in ms if m not in victims]
    with Writers(survivors, "f/") as w:
        wait_for(lambda: len(w.acked) >= 30, what="writes before the kills")
        for v in victims:
            v.kill()  # kill -9
        n = len(w.acked)
        # enough for several snapshots and log compactions while they are down
        wait_for(lambda: len(w.acked) >= n + 400, timeout=120, what="writes with two down")
        for v in victims:
            v.restart(wait=False)
        for v in victims:
            v.wait_ready(timeout=60)
        n = len(w.acked)
        wait_for(lambda: len(w.acked) >= n + 30, what="writes after the return")
    assert_all_present(ms, w.acked, "f/")
    assert sum(installed(v) for v in victims) >= 1


def test_leader_killed_during_writes_then_returns(request):
    ms = start_cluster(request, 3, extra_args=SNAP)
    leader = leader_of(ms)
    followers = [m for m in ms if m is not leader]
    with Writers(followers, "k/") as w:
        wait_for(lambda: len(w.acked) >= 30, what="writes before the kill")
        leader.kill()  # kill -9
        n = len(w.acked)
        wait_for(lambda: len(w.acked) >= n + 300, timeout=120, what="writes after the kill")
        leader.restart(wait=False)
        leader.wait_ready(timeout=60)
        n = len(w.acked)
        wait_for(lambda: len(w.acked) >= n + 30, what="writes after the return")
    assert_all_present(ms, w.acked, "k/")


def test_follower_restart_and_membership_changes_while_writing(request):
    ms = start_cluster(request, 3, extra_args=SNAP)
    leader = leader_of(ms)
    follower = [m for m in ms if m is not leader][0]
    with Writers([leader], "c/") as w:
        wait_for(lambda: len(w.acked) >= 30, what="writes")
        follower.stop()
        n = len(w.acked)
        wait_for(lambda: len(w.acked) >= n + 200, timeout=120, what="writes, follower down")
        follower.restart(wait=False)
        follower.wait_ready(timeout=60)
        new, new_id = add_member(request, ms, "m4", learner=False)
        new.wait_ready(timeout=60)
        n = len(w.acked)
        wait_for(lambda: len(w.acked) >= n + 200, timeout=120, what="writes after the add")
        r = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(
            leader.etcdctl("member", "remove", "%x" % new_id)), what="member remove")
        n = len(w.acked)
        wait_for(lambda: len(w.acked) >= n + 30, what="writes after the remove")
    assert_all_present(ms, w.acked, "c/")
    wait_for(lambda: not new.running(), timeout=60, what="the removed member to stop")


def test_watch_on_a_frozen_member(request):
    """A member frozen (SIGSTOP) while the leader writes past several
    snapshots catches up when it thaws (libraft queued the entries for it,
    so no snapshot is needed; tests/unit/test_catchup.c covers a watcher
    across a snapshot install); a watch it was serving all along gets every
    event, in order, without gaps or duplicates."""
    import signal
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ms = start_cluster(request, 3, extra_args=SNAP)
    leader = leader_of(ms)
    frozen = [m for m in ms if m is not leader][0]
    put_many(leader, "z/", 5)
    _, start = count(leader, "z/")

    ch = frozen.channel()
    request.addfinalizer(ch.close)
    got = []
    done = threading.Event()
    streams = []

    def reqs():
        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"z/", range_end=b"z0", start_revision=start + 1))
        done.wait(120)

    def reader():
        stream = rpc_pb2_grpc.WatchStub(ch).Watch(reqs(), timeout=120)
        streams.append(stream)
        try:
            for resp in stream:
                got.extend((ev.kv.key, ev.kv.mod_revision) for ev in resp.events)
                if done.is_set():
                    break
        except Exception:  # cancelled at the end
            pass

    t = threading.Thread(target=reader)
    t.start()
    put_many(leader, "z/", 5, start=5)
    wait_for(lambda: len(got) >= 5, what="events before the freeze")
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    try:
        put_many(leader, "z/", 250, start=10)
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
    put_many(leader, "z/", 5, start=260)
    _, end = count(leader, "z/")
    wait_for(lambda: len(got) >= 260, timeout=60, what="every event on the thawed member")
    done.set()
    for st in streams:
        st.cancel()
    t.join(30)
    revs = [r for _, r in got]
    assert revs == list(range(start + 1, end + 1))
    assert [k for k, _ in got] == [("z/%05d" % i).encode() for i in range(5, 265)]
