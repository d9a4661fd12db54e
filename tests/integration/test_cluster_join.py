"""A member added with `member add` learns its ID and the cluster ID from
the cluster (issue 5), as etcd: `member add` mixes the time into the new
ID, and a member started with --initial-cluster-state existing and an
empty data dir asks the other members for the member list before it
starts (etcd's GetClusterFromRemotePeers), finds itself by its peer URLs
and takes that ID and the cluster ID.

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_cluster_join.py
"""

import hashlib
import os
import shutil
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ClusterMember, _test_deadline, start_cluster  # noqa: E402,F401
from test_cluster import count, ctl_json, leader_of, wait_for  # noqa: E402
from test_cluster_catchup import dump, put_many  # noqa: E402
from test_peer_tls import PeerTLSMember, certs, start_members, tls_args  # noqa: E402,F401


def etcd_member_id(peer_urls, cluster_name, now):
    """membership.NewMember with a time (tests/diff/test_ids.py has the rest)."""
    b = "".join(sorted(peer_urls)) + cluster_name + "%d" % now
    return struct.unpack(">Q", hashlib.sha1(b.encode()).digest()[:8])[0]


def members(m):
    return {x["ID"]: x for x in ctl_json(m, "member", "list")["members"]}


def add(via, name, peer_url):
    """etcdctl member add; returns (new ID, ETCD_INITIAL_CLUSTER)."""
    r = via.etcdctl("member", "add", name, "--peer-urls=" + peer_url)
    assert r.returncode == 0, r.stderr
    ic = [line.split("=", 1)[1].strip('"') for line in r.stdout.splitlines()
          if line.startswith("ETCD_INITIAL_CLUSTER=")][0]
    return int(r.stdout.split()[1], 16), ic


def test_readded_with_the_same_peer_urls_gets_a_new_id(request):
    ms = start_cluster(request, 3)
    leader = leader_of(ms)
    victim = [m for m in ms if m is not leader][0]
    others = [m for m in ms if m is not victim]
    put_many(leader, "j/", 50)
    old = members(leader)
    vid = [i for i, x in old.items() if x["name"] == victim.name][0]
    cluster_id = ctl_json(leader, "member", "list")["header"]["cluster_id"]

    victim.kill()
    shutil.rmtree(victim.data_dir)
    r = leader.etcdctl("member", "remove", "%x" % vid)
    assert r.returncode == 0, r.stderr
    put_many(others[1], "j/", 50, start=50)

    # the same name and peer URLs as the removed member: accepted, new ID,
    # derived as etcd's MemberAdd does (the URLs and the Unix time, no token)
    before = int(time.time())
    new_id, ic = add(others[1], victim.name, victim.peer_url)
    after = int(time.time())
    assert new_id != vid
    assert new_id in {etcd_member_id([victim.peer_url], "", t) for t in range(before, after + 9)}
    victim.initial_cluster = ic
    victim.cluster_state = "existing"
    victim.start(wait=False)
    victim.wait_ready(timeout=60)

    _, rev = count(leader, "j/")
    wait_for(lambda: count(victim, "j/", serializable=True)[1] >= rev, timeout=60,
             what="the re-added member catching up")
    assert dump(victim, "j/", rev) == dump(leader, "j/", rev)
    assert len(dump(victim, "j/", rev)) == 100

    # member list (from every member): the new ID, named once it published
    for m in ms:
        lst = wait_for(lambda: (lambda l: l if l.get(new_id, {}).get("name") else None)(
            members(m)), what="the new member's name in %s's member list" % m.name)
        assert vid not in lst
        assert lst[new_id]["name"] == victim.name
        assert lst[new_id]["peerURLs"] == [victim.peer_url]
        assert len(lst) == 3
    # the re-added member answers with the ID and cluster ID it was given
    st = ctl_json(victim, "endpoint", "status")[0]["Status"]
    assert st["header"]["member_id"] == new_id
    assert st["header"]["cluster_id"] == cluster_id
    with open(os.path.join(victim.data_dir, "member", "identity")) as f:
        assert "member_id=%016x" % new_id in f.read()

    # the cluster works through it: a write there is read on the others
    r = victim.etcdctl("put", "j/through-new", "ok")
    assert r.returncode == 0, r.stderr
    for m in others:
        r = m.etcdctl("get", "j/through-new", "--print-value-only")
        assert r.returncode == 0 and r.stdout == "ok\n", (r.stdout, r.stderr)

    # it keeps them across a restart (the data dir knows them now)
    victim.stop()
    victim.start()
    st = ctl_json(victim, "endpoint", "status")[0]["Status"]
    assert st["header"]["member_id"] == new_id
    assert st["header"]["cluster_id"] == cluster_id


def test_joining_member_must_agree_with_the_cluster(request):
    ms = start_cluster(request, 2)
    ic = ",".join("%s=%s" % (m.name, m.peer_url) for m in ms)

    # not added: the cluster has 2 members, its --initial-cluster 3
    stray = ClusterMember("m5", "sut-m5")
    request.addfinalizer(stray.cleanup)
    stray.initial_cluster = ic + ",m5=" + stray.peer_url
    stray.cluster_state = "existing"
    stray.start(wait=False)
    assert stray.proc.wait(timeout=60) != 0
    log = stray.log_tail()
    assert "error validating peerURLs {ClusterID:" in log, log
    assert "member count is unequal" in log, log
    assert not os.path.exists(os.path.join(stray.data_dir, "member", "identity"))
    assert len(members(ms[0])) == 2

    # added, but started with other peer URLs for an existing member
    odd = ClusterMember("m6", "sut-m6")
    request.addfinalizer(odd.cleanup)
    new_id, _ = add(ms[1], "m6", odd.peer_url)
    for m in ms:
        wait_for(lambda: new_id in members(m), what="the added member in %s's list" % m.name)
    odd.initial_cluster = "%s=%s,%s=http://127.0.0.1:42381,m6=%s" % (
        ms[0].name, ms[0].peer_url, ms[1].name, odd.peer_url)
    odd.cluster_state = "existing"
    odd.start(wait=False)
    assert odd.proc.wait(timeout=60) != 0
    log = odd.log_tail()
    assert "error validating peerURLs" in log, log
    assert "PeerURLs: no match found for existing member" in log, log

    # no member answers
    lone = ClusterMember("m7", "sut-m7")
    request.addfinalizer(lone.cleanup)
    lone.initial_cluster = "m8=http://127.0.0.1:42382,m7=" + lone.peer_url
    lone.cluster_state = "existing"
    lone.start(wait=False)
    assert lone.proc.wait(timeout=60) != 0
    log = lone.log_tail()
    assert ("cannot fetch cluster info from peer urls: could not retrieve cluster "
            "information from the given URLs") in log, log


def test_join_over_peer_tls(request, certs):
    """The member list is fetched over the peer port with the --peer-* TLS."""
    ms = start_members(request, [tls_args(certs, "m1"), tls_args(certs, "m2")])
    new = PeerTLSMember("m3", "peertls-m3", extra_args=tls_args(certs, "m3"))
    request.addfinalizer(new.cleanup)
    new_id, ic = add(ms[1], "m3", new.peer_url)
    new.initial_cluster = ic
    new.cluster_state = "existing"
    new.start(wait=False)
    new.wait_ready(timeout=60)
    st = ctl_json(new, "endpoint", "status")[0]["Status"]
    assert st["header"]["member_id"] == new_id
    assert st["header"]["cluster_id"] == ctl_json(ms[0], "member", "list")["header"]["cluster_id"]
    wait_for(lambda: members(ms[0]).get(new_id, {}).get("name") == "m3",
             what="m3 published in the member list")
