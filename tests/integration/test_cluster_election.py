"""Elections, quorum loss, pre-vote, learners and the Raft timers, each
compared with a real etcd cluster where etcd's behaviour is observable.

What etcd does (etcd 3.4/3.5 source, etcdserver/v3_server.go, server.go):
- a write on a member that has no leader: raft's Propose blocks while
  there is none, and after etcd's request timeout (5 s + 2 election
  timeouts) the context error comes back untranslated: "context deadline
  exceeded" (DeadlineExceeded with etcd 3.5's grpc-go; Debian's etcd 3.4,
  built with grpc-go 1.33, sends the same text as Unknown);
- a linearizable read there: ReadIndex gets no answer and fails with
  "etcdserver: request timed out" (Unavailable) after the request timeout;
- a serializable read is served locally.

Each wait polls a condition with a bound; no pass/fail depends on a
stopwatch threshold (timings seen are printed, see docs/performance.md).

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_cluster_election.py
"""

import json
import os
import sys
import threading
import time

import grpc
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import (ETCD, ClusterMember, _test_deadline, server_under_test_binary,  # noqa: E402,F401
                     start_cluster)
from faultlib import FaultCluster  # noqa: E402
from lincheck import Op, check  # noqa: E402
from test_cluster import wait_for  # noqa: E402

from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402

IMPLS = ["ketch", "etcd"]


def binary_of(impl):
    return ETCD if impl == "etcd" else server_under_test_binary()


def status(m, timeout=2):
    ch = grpc.insecure_channel(m.endpoint)
    try:
        return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=timeout)
    finally:
        ch.close()


def agreed_leader(ms, timeout=30):
    """The running member that every running member of `ms` names leader."""
    def agreed():
        sts = {m.name: status(m) for m in ms if m.running()}
        leaders = {s.leader for s in sts.values()}
        if len(leaders) != 1 or 0 in leaders:
            return None
        lid = leaders.pop()
        return next((m for m in ms if m.running() and sts[m.name].header.member_id == lid), None)
    return wait_for(agreed, timeout=timeout, what="an agreed leader")


def kv(m):
    return rpc_pb2_grpc.KVStub(m.channel())


def attempt(fn):
    """(None, None, response) or (code, details, None), and the seconds taken."""
    t = time.monotonic()
    try:
        r = fn()
        return (None, None, r), time.monotonic() - t
    except grpc.RpcError as e:
        return (e.code(), e.details(), None), time.monotonic() - t


def in_thread(fn):
    out = {}

    def run():
        out["r"] = attempt(fn)
    t = threading.Thread(target=run)
    t.start()
    return t, out


def cluster(request, impl, n=3, extra_args=()):
    return start_cluster(request, n, binary=binary_of(impl), tmpfs=impl == "etcd",
                         label="%s-el" % impl, extra_args=extra_args)


# -- 1. no quorum -------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_no_quorum_write_and_read_fail_as_etcd(request, impl):
    ms = cluster(request, impl)
    a = ms[0]
    k = kv(a)
    put = k.Put(rpc_pb2.PutRequest(key=b"q", value=b"before"), timeout=10)
    rev = put.header.revision
    # (a serializable read on the member that took the write sees it: in
    # ketch it waits for the member's own apply, test_cluster_ryw.py)
    wait_for(lambda: k.Range(rpc_pb2.RangeRequest(key=b"q", serializable=True),
                             timeout=2).kvs, what="the write applied on %s" % a.name)
    ms[1].stop()
    ms[2].stop()
    # the survivor (leader or not) gives up its leader: nobody to elect with
    wait_for(lambda: status(a).leader == 0, what="%s without a leader" % impl)

    # a deadline well past etcd's request timeout (7 s here), so the
    # server's own answer reaches the client
    tw, w = in_thread(lambda: k.Put(rpc_pb2.PutRequest(key=b"q", value=b"lost"), timeout=20))
    tr, r = in_thread(lambda: k.Range(rpc_pb2.RangeRequest(key=b"q"), timeout=20))
    (code, det, resp), _ = attempt(lambda: k.Range(
        rpc_pb2.RangeRequest(key=b"q", serializable=True), timeout=5))
    assert code is None, (code, det)
    assert [(x.key, x.value) for x in resp.kvs] == [(b"q", b"before")]
    tw.join(30)
    tr.join(30)
    (wcode, wdet, _), wsec = w["r"]
    (rcode, rdet, _), rsec = r["r"]
    print("\n%s, no quorum: write %s %r after %.2fs; linearizable read %s %r after %.2fs" % (
        impl, wcode, wdet, wsec, rcode, rdet, rsec))
    assert wdet == "context deadline exceeded"
    # grpc-go >= 1.45 (etcd 3.5) sends a handler's context error as
    # DeadlineExceeded; Debian's etcd 3.4 (grpc-go 1.33) as Unknown
    assert wcode == (grpc.StatusCode.UNKNOWN if impl == "etcd" else grpc.StatusCode.DEADLINE_EXCEEDED)
    assert (rcode, rdet) == (grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out")

    # nothing changed: with the quorum back, the key and revision are as before
    ms[1].restart(wait=False)
    ms[2].restart(wait=False)
    agreed_leader(ms)
    got = wait_for(lambda: k.Range(rpc_pb2.RangeRequest(key=b"q"), timeout=5), what="a read")
    assert [(x.key, x.value, x.mod_revision) for x in got.kvs] == [(b"q", b"before", rev)]
    assert got.header.revision == rev


# -- 2. requests during an election wait for the new leader -------------------

def test_requests_wait_through_an_election(request):
    ms = cluster(request, "ketch")
    leader = agreed_leader(ms)
    f = next(m for m in ms if m is not leader)
    k = kv(f)
    k.Put(rpc_pb2.PutRequest(key=b"e", value=b"0"), timeout=10)
    old_term = status(f).raftTerm
    leader.kill()
    # sent at once: the follower still knows the dead leader, no election
    # has begun (it takes at least an election timeout)
    tw, w = in_thread(lambda: k.Put(rpc_pb2.PutRequest(key=b"e", value=b"1"), timeout=15))
    tr, r = in_thread(lambda: k.Range(rpc_pb2.RangeRequest(key=b"e"), timeout=15))
    tw.join(30)
    tr.join(30)
    (wcode, wdet, wresp), wsec = w["r"]
    (rcode, rdet, rresp), rsec = r["r"]
    print("\nduring an election: write answered after %.2fs, linearizable read after %.2fs" % (
        wsec, rsec))
    assert wcode is None, (wcode, wdet)
    assert rcode is None, (rcode, rdet)
    # they were served by a leader of a later term: they waited for it
    assert wresp.header.raft_term > old_term
    new = agreed_leader([m for m in ms if m is not leader])
    assert new is not leader
    got = k.Range(rpc_pb2.RangeRequest(key=b"e"), timeout=10)
    assert got.kvs[0].value == b"1" and got.header.revision == wresp.header.revision
    # the read saw the store either before or after the write, nothing else
    assert rresp.kvs[0].value in (b"0", b"1")


# -- 3. requests in flight when the leadership moves ---------------------------

UNAV, UNKNOWN = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN
# what etcd answers requests caught by a leader change (etcdserver/v3_server.go):
# a linearizable read whose ReadIndex was pending: "leader changed"; a write
# its proposer gave up on at the request timeout: "request timed out,
# possibly due to previous leader failure" (or without the reason), or one
# the old leader dropped while handing over: "raft proposal dropped"
ETCD_ANSWERS = {
    "get": {(UNAV, "etcdserver: leader changed")},
    "put": {(UNAV, "etcdserver: request timed out, possibly due to previous leader failure"),
            (UNAV, "etcdserver: request timed out"), (UNKNOWN, "raft proposal dropped")},
}


@pytest.mark.parametrize("impl", IMPLS)
def test_requests_in_flight_during_move_leader(request, impl):
    """Linearizable reads and writes on every member while the leadership
    moves (three move-leaders): each fails, if at all, only with one of
    etcd's answers; every acknowledged write is there, every write is
    applied at most once, and the history is linearizable
    (tests/lincheck.py). Only writes in flight at a handover may fail;
    on ketch at most a twentieth of those (etcd fails up to ~8%). (Before ketch kept waiting for a
    write whose leader stepped down before it committed, such writes
    failed at once with "etcdserver: leader changed" though a later
    leader could still commit them, and reads on a leader handing over
    failed with "etcdserver: no leader". Then, until a follower kept its
    connection to the old leader open for the answers still due on it,
    it cancelled the writes in flight there when it learned of the new
    leader, and each failed after the 7 s request timeout, though the old
    leader had refused most of them ("not leader": they would have gone
    to the new one) and applied the rest: 0-22 of ~1,300 writes on the
    plain build, 70-206 on the ASan build, 2-7 for etcd.)"""
    move_leader_under_load(cluster(request, impl), impl)


def test_requests_in_flight_during_move_leader_slow_links(request):
    """The same with 50 ms on every link between members (fault proxies),
    so that a follower always has writes in flight on the old leader
    when it learns of the new one (on the plain build without the slow
    links, it has them only in some runs)."""
    # (a longer election timeout: no election under ASan either)
    fc = fault_cluster(request, "ketch", ["--election-timeout", "3000"])
    names = [m.name for m in fc.members]
    for a in names:
        for b in names:
            if a != b:
                fc.net.set_rule(a, b, ("delay", 0.05))
    move_leader_under_load(fc.members, "ketch", slow=True)


TRANSFER_TIMEOUT = "etcdserver: request timed out, leader transfer took too long"


@pytest.mark.parametrize("impl", IMPLS)
def test_move_leader_to_a_stopped_member_times_out_as_etcd(request, impl):
    """MoveLeader to a member that is down: the leadership stays. ketch
    answers with etcd's ErrTimeoutLeaderTransfer when libraft gives up
    (after an election timeout; before, it answered "etcdserver: request
    timed out"); etcd's MoveLeader waits for the leader to change until
    the call's own deadline (etcdserver/server.go), so its client sees
    DeadlineExceeded (etcdctl's 5 s command timeout)."""
    ms = cluster(request, impl)
    leader = agreed_leader(ms)
    target = next(m for m in ms if m is not leader)
    tid = status(target).header.member_id
    target.stop()
    (code, det, _), sec = attempt(lambda: rpc_pb2_grpc.MaintenanceStub(
        leader.channel()).MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=tid), timeout=5))
    print("\n%s, move-leader to a stopped member: %s %r after %.2fs" % (impl, code, det, sec))
    if impl == "etcd":
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED, (code, det)
    else:
        # (etcd's togRPCError has no code for it: Unknown)
        assert (code, det) == (grpc.StatusCode.UNKNOWN, TRANSFER_TIMEOUT)
    assert agreed_leader([m for m in ms if m is not target]) is leader


def move_leader_under_load(ms, impl, n_moves=3, slow=False):
    stubs = [kv(m) for m in ms]
    futs = []        # (kind, key, future, lincheck op), in the order issued
    inflight = set()  # keys of the writes in flight at a handover

    def issue(kind, key, n, fn):
        op = Op(kind, key, arg=key if kind == "put" else None, call=time.monotonic(),
                client=n, member=ms[n].name, id=len(futs))
        f = fn()

        def done(_f, op=op):
            op.ret = time.monotonic()
        f.add_done_callback(done)
        futs.append((kind, key, f, op))

    for rnd in range(n_moves):
        leader = agreed_leader(ms)
        target = next(m for m in ms if m is not leader)
        tid = status(target).header.member_id
        stop = threading.Event()

        def load():
            i = 0
            while not stop.is_set():
                for n, st in enumerate(stubs):
                    key = b"mv/%d/%05d/%d" % (rnd, i, n)
                    issue("put", key, n, lambda: st.Put.future(
                        rpc_pb2.PutRequest(key=key, value=key), timeout=20))
                    if i >= 2:
                        # a key another member's client wrote two rounds ago
                        rkey = b"mv/%d/%05d/%d" % (rnd, i - 2, (n + 1) % len(stubs))
                        issue("get", rkey, n, lambda: st.Range.future(
                            rpc_pb2.RangeRequest(key=rkey), timeout=20))
                i += 1
                time.sleep(0.002)
        th = threading.Thread(target=load)
        th.start()
        try:
            time.sleep(0.3)
            # in flight at the handover: not answered when MoveLeader is
            # sent, or sent before it returns
            n0 = len(futs)
            inflight.update(k for kind, k, f, _ in futs[:n0] if kind == "put" and not f.done())
            for attempt in range(3):
                try:
                    rpc_pb2_grpc.MaintenanceStub(leader.channel()).MoveLeader(
                        rpc_pb2.MoveLeaderRequest(targetID=tid), timeout=10)
                    break
                except grpc.RpcError as e:
                    # on slow links under ASan, the old leader may hear of
                    # the new one only after the transfer's own timeout (an
                    # election timeout): then it answers as etcd's does
                    # when a transfer takes too long
                    if not slow or e.details() != TRANSFER_TIMEOUT or attempt == 2:
                        raise
                    leader = agreed_leader(ms)
                    if leader is target:
                        break
            inflight.update(k for kind, k, _, _ in futs[n0:len(futs)] if kind == "put")
            time.sleep(0.3)
        finally:
            stop.set()
            th.join()
        assert agreed_leader(ms) is target
    seen = {}
    acked, failed, history = [], [], []
    for kind, key, f, op in futs:
        try:
            r = f.result()
            seen[(kind, "OK")] = seen.get((kind, "OK"), 0) + 1
            op.ret = op.ret or time.monotonic()
            if kind == "put":
                acked.append(key)
                op.out = r.header.revision
            else:
                op.out = ((r.kvs[0].value, r.kvs[0].mod_revision, r.header.revision) if r.kvs
                          else (None, 0, r.header.revision))
        except grpc.RpcError as e:
            seen[(kind, e.code(), e.details())] = seen.get((kind, e.code(), e.details()), 0) + 1
            if kind == "put":
                failed.append(key)
                op.status, op.ret = "unknown", None   # may have happened, or not
            else:
                op.status = "fail"
        history.append(op)
    print("\n%s, %d move-leaders under load: %s" % (impl, n_moves, seen))
    for k in seen:
        if k[1] != "OK":
            assert (k[1], k[2]) in ETCD_ANSWERS[k[0]], k
    r = stubs[0].Range(rpc_pb2.RangeRequest(key=b"mv/", range_end=b"mv0"), timeout=10)
    got = {x.key: x for x in r.kvs}
    assert not [k for k in acked if k not in got], "acknowledged writes lost"
    # each write is applied at most once: a key put twice has version 2
    assert not [(k, x.version) for k, x in got.items() if x.version != 1 or x.value != k]
    print("failed writes: %d of %d in flight at the %d handovers (%d writes), "
          "applied after all: %d" % (len(failed), len(inflight), n_moves, len(acked) + len(failed),
                                     len([k for k in failed if k in got])))
    assert not [k for k in failed if k not in inflight], "a write not in flight at a handover failed"
    anomalies = check(history)
    assert not anomalies, "\n".join(anomalies[:10])
    if impl == "ketch":
        # few fail: the old leader answers what it refused or applied,
        # and what it appended stays in the new leader's log; a write
        # fails only if the request timeout passes first
        assert len(failed) <= len(inflight) // 20, (len(failed), len(inflight))
        # ketch fails such a write only once its entry is gone or the request
        # timeout (7 s) has passed; the leader moves within a second here.
        # (The member that forwarded it answers from its own apply when the
        # leader's answer is lost: it keeps its request ID in the entry.)
        assert not [k for k in failed if k in got], "a write reported failed was applied"
    assert len(acked) > 50


# -- 4. pre-vote: a member cut off and healed does not disturb the leader -----

def fault_cluster(request, impl, extra_args=()):
    fc = FaultCluster(3, label="%s-pv" % impl, extra_args=extra_args)
    if impl == "etcd":
        for m in fc.members:
            m.binary = ETCD
    request.addfinalizer(fc.cleanup)
    return fc.start()


@pytest.mark.parametrize("impl,prevote", [("ketch", True), ("etcd", True), ("etcd", False)])
def test_prevote_partitioned_member_does_not_raise_the_term(request, impl, prevote):
    """etcd's --pre-vote=false run is the control: there the isolated
    member's elections raise the term and it deposes the leader on its
    return, which is what this test must catch."""
    args = ["--heartbeat-interval", "100", "--election-timeout", "1000"]
    if impl == "etcd":
        args.append("--pre-vote=%s" % ("true" if prevote else "false"))
    fc = fault_cluster(request, impl, args)
    leader = fc.leader()
    f = next(m for m in fc.members if m is not leader)
    term = status(leader).raftTerm
    fc.net.isolate(f.name)
    # long enough for several of its election timeouts (1-2 s): it
    # forgets the leader and (pre-)campaigns
    wait_for(lambda: status(f).leader == 0, what="the isolated member to lose its leader")
    time.sleep(4)
    isolated_term = status(f).raftTerm
    fc.net.heal()
    # it rejoins: all three agree on a leader and a term again
    def joined():
        sts = [status(m) for m in fc.members]
        return (len({s.leader for s in sts}) == 1 and sts[0].leader != 0
                and len({s.raftTerm for s in sts}) == 1 and sts)
    sts = wait_for(joined, what="the member to rejoin")
    print("\n%s pre-vote=%s: term %d before, %d on the isolated member, %d after" % (
        impl, prevote, term, isolated_term, sts[0].raftTerm))
    if prevote:
        assert isolated_term == term
        assert sts[0].raftTerm == term
        assert fc.leader() is leader
    else:
        # (etcd 3.4's Status may show the isolated member's term late)
        assert sts[0].raftTerm > term


# -- 5. learners do not vote --------------------------------------------------

def ctl_json(m, *args):
    r = m.etcdctl(*args, "-w", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def learner_flags(m, mid):
    """isLearner of member `mid` in `m`'s member list (etcdctl: the
    python3-etcd3 protos predate learners)."""
    return [x.get("isLearner", False) for x in ctl_json(m, "member", "list")["members"]
            if x["ID"] == mid]


@pytest.mark.parametrize("impl", IMPLS)
def test_learner_does_not_vote_until_promoted(request, impl):
    args = ["--heartbeat-interval", "50", "--election-timeout", "500"]
    v1, v2 = cluster(request, impl, n=2, extra_args=args)
    agreed_leader([v1, v2])
    lrn = ClusterMember("m3", "%s-el-m3" % impl, binary=binary_of(impl), tmpfs=impl == "etcd",
                        extra_args=args)
    request.addfinalizer(lrn.cleanup)
    # (etcd refuses changes until its members have been connected for 5 s:
    # "etcdserver: unhealthy cluster")
    r = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(
        v1.etcdctl("member", "add", "m3", "--learner", "--peer-urls=" + lrn.peer_url)),
        what="member add")
    lid = int(r.stdout.split()[1], 16)
    lrn.initial_cluster = ",".join("%s=%s" % (m.name, m.peer_url) for m in (v1, v2, lrn))
    lrn.cluster_state = "existing"
    lrn.start(wait=False)
    k1 = kv(v1)
    put = k1.Put(rpc_pb2.PutRequest(key=b"l", value=b"1"), timeout=10)
    # the learner replicates
    wait_for(lambda: [x.value for x in kv(lrn).Range(rpc_pb2.RangeRequest(
        key=b"l", serializable=True), timeout=2).kvs] == [b"1"], what="the learner to replicate")
    wait_for(lambda: learner_flags(v1, lid) == [True], what="the learner in the list")

    # one voter down: the other voter and the learner elect nobody
    v2.stop()
    wait_for(lambda: status(v1).leader == 0, what="v1 to lose its leader")
    k3 = kv(lrn)
    (code, det, _), _ = attempt(lambda: k1.Put(rpc_pb2.PutRequest(key=b"l", value=b"2"),
                                               timeout=20))
    print("\n%s, voter + learner: write %s %r" % (impl, code, det))
    assert det == "context deadline exceeded"
    # (etcd's learner never campaigns, so it may go on naming the old
    # leader; the only voter left has none)
    assert status(v1).leader == 0
    assert k3.Range(rpc_pb2.RangeRequest(key=b"l", serializable=True),
                    timeout=5).kvs[0].value == b"1"

    # both voters up, promote the learner: three voters
    v2.restart(wait=False)
    agreed_leader([v1, v2, lrn])
    wait_for(lambda: v1.etcdctl("member", "promote", "%x" % lid).returncode == 0,
             what="the promotion")
    for m in (v1, v2, lrn):
        wait_for(lambda: learner_flags(m, lid) == [False], what="the promotion on %s" % m.name)
    # v2 stopped: v1 and the promoted member elect a leader and take writes
    v2.stop()
    nl = agreed_leader([v1, lrn])
    assert nl in (v1, lrn)
    r = wait_for(lambda: k3.Put(rpc_pb2.PutRequest(key=b"l", value=b"3"), timeout=5),
                 what="a write with v2 down")
    assert r.header.revision > put.header.revision
    got = k1.Range(rpc_pb2.RangeRequest(key=b"l"), timeout=10)
    assert got.kvs[0].value == b"3"


# -- 6. --election-timeout and --heartbeat-interval are honoured ----------------

@pytest.mark.parametrize("impl", IMPLS)
def test_election_timeout_is_honoured(request, impl):
    """With --election-timeout 6000, after a leader kill the survivors keep
    no new leader while a write with a 2 s deadline times out; only later
    does one win. With the default (1000 ms) a new leader would be there
    within 2 s. And etcd's minimum lease TTL follows the two timers
    (ceil(1.5 election ticks x heartbeat) = 9 s here, 2 s by default)."""
    args = ["--heartbeat-interval", "200", "--election-timeout", "6000"]
    ms = cluster(request, impl, extra_args=args)
    leader = agreed_leader(ms)
    rest = [m for m in ms if m is not leader]
    f = rest[0]
    k = kv(f)
    lease = rpc_pb2_grpc.LeaseStub(f.channel()).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=1),
                                                          timeout=10)
    assert lease.TTL == 9
    old = status(f)
    leader.kill()
    events = []
    # 1) a write with a 2 s deadline, sent at once: there is no leader to
    #    take it before it expires
    (code, det, _), sec = attempt(lambda: k.Put(rpc_pb2.PutRequest(key=b"t", value=b"1"),
                                                timeout=2))
    events.append(("write with 2s deadline", code))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED, (code, det)
    # 2) still no new leader, on either survivor
    for m in rest:
        st = status(m)
        events.append(("status of %s" % m.name, st.leader, st.raftTerm))
        assert st.leader in (0, old.leader) and st.raftTerm == old.raftTerm
    # 3) then one is elected, in a later term, and takes the write
    t0 = time.monotonic()
    new = agreed_leader(rest, timeout=40)
    events.append(("new leader", new.name, time.monotonic() - t0))
    r = wait_for(lambda: k.Put(rpc_pb2.PutRequest(key=b"t", value=b"2"), timeout=10),
                 what="a write after the election")
    assert r.header.raft_term > old.raftTerm
    print("\n%s: %s" % (impl, events))
