"""Member and cluster IDs exactly as etcd derives them (issue 5).

Real etcd (/usr/bin/etcd) and ketch are started one after the other with
the same flags (the same ports, so the same peer URLs) and must report the
same IDs: `etcdctl member list -w json` (header cluster_id and member_id,
each member's ID, name and peer URLs) and `etcdctl endpoint status -w json`
(header cluster_id and member_id), from every member. Both are also
checked against etcd's derivation written out here (membership.NewMember:
sha1 of the sorted peer URLs, the cluster token and, for `member add`, the
Unix time; RaftCluster.genID: sha1 of the sorted member IDs), so a
mismatch says which side is off.

Start modes: a static cluster of 1 and of 3 members with a non-default
--initial-cluster-token; several peer URLs per member (listed out of
order, so sorting matters); members restored from a snapshot
(`etcdctl snapshot restore` then etcd, vs `ketchctl snapshot restore` then
ketch, and vs `ketch --restore-snapshot`); `member add`.

Run:  /usr/bin/python3 -m pytest -q tests/diff/test_ids.py
"""

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import shutil
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import (ETCD, ETCDCTL, READY_TIMEOUT, REPO, Server, _test_deadline,  # noqa: E402,F401
                     is_etcd, run_etcdctl, server_under_test_binary)

KETCH = server_under_test_binary()
BUILD = os.environ.get("KETCH_BUILD", "build")
KETCHCTL = os.path.join(BUILD if os.path.isabs(BUILD) else os.path.join(REPO, BUILD), "ketchctl")

if is_etcd(KETCH) or not os.path.exists(KETCHCTL):
    pytest.skip("compares ketch (and ketchctl) with real etcd", allow_module_level=True)


# ---- etcd's derivation, written out -------------------------------------

def etcd_member_id(peer_urls, cluster_name, now=None):
    """membership.NewMember: sha1(sorted URLs ++ cluster name [++ unix
    seconds]), first 8 bytes big-endian."""
    b = "".join(sorted(peer_urls)) + cluster_name + ("" if now is None else "%d" % now)
    return struct.unpack(">Q", hashlib.sha1(b.encode()).digest()[:8])[0]


def etcd_cluster_id(ids):
    """RaftCluster.genID: sha1 of the sorted IDs, 8 bytes big-endian each."""
    b = b"".join(struct.pack(">Q", i) for i in sorted(ids))
    return struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0]


# ---- clusters given by a spec ------------------------------------------

def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Spec:
    """Names, client ports and peer URLs (in the order the flags give
    them) of a cluster, and its token; the same for etcd and ketch."""

    def __init__(self, token, peer_counts):
        ports = free_ports(len(peer_counts) + sum(peer_counts))
        self.token = token
        self.members = []
        for i, n in enumerate(peer_counts):
            client = ports.pop()
            # descending port order, so the flags' order is not the sorted one
            peers = sorted((ports.pop() for _ in range(n)), reverse=True)
            self.members.append(("m%d" % (i + 1), client,
                                 ["http://127.0.0.1:%d" % p for p in peers]))

    def initial_cluster(self):
        return ",".join("%s=%s" % (name, u) for name, _, urls in self.members for u in urls)

    def expected(self):
        """{name: member ID} and the cluster ID, as etcd derives them."""
        ids = {name: etcd_member_id(urls, self.token) for name, _, urls in self.members}
        return ids, etcd_cluster_id(ids.values())


class Node(Server):
    def __init__(self, binary, spec, i, label, extra=()):
        name, client, urls = spec.members[i]
        super().__init__(binary=binary, name=name, tmpfs=is_etcd(binary),
                         label="%s-%s" % (label, name), extra_args=extra)
        self.client_port = client
        self.urls = urls
        self.spec = spec

    @property
    def peer_url(self):
        return self.urls[0]

    def args(self):
        peers = ",".join(self.urls)
        return [
            self.binary,
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", peers,
            "--initial-advertise-peer-urls", peers,
            "--initial-cluster", self.spec.initial_cluster(),
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.spec.token,
        ] + self.extra_args


def ctl_json(node, *args):
    r = run_etcdctl(node.endpoint, *args, "-w", "json")
    assert r.returncode == 0, (args, r.stderr, node.log_tail())
    return json.loads(r.stdout)


def observe(nodes):
    """What every member says about the IDs, keyed by member name."""
    out = {}
    for n in nodes:
        ml = ctl_json(n, "member", "list")
        st = ctl_json(n, "endpoint", "status")[0]["Status"]["header"]
        out[n.name] = {
            "member_list_header": (ml["header"]["cluster_id"], ml["header"]["member_id"]),
            "status_header": (st["cluster_id"], st["member_id"]),
            "members": sorted((m["ID"], m["name"], m["peerURLs"]) for m in ml["members"]),
        }
    return out


def run_cluster(request, binary, spec, label, prepare=None, extra=(), check=None):
    """Starts the spec's cluster with `binary`, returns observe(), stops it
    (the other binary takes the same ports next). `prepare(nodes)` runs
    before the start (a restore), `check(node)` on each member after."""
    nodes = [Node(binary, spec, i, label, extra) for i in range(len(spec.members))]
    for n in nodes:
        request.addfinalizer(n.cleanup)
    if prepare:
        prepare(nodes)
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.wait_ready(timeout=max(READY_TIMEOUT, 30))
    seen = observe(nodes)
    if check:
        for n in nodes:
            check(n)
    for n in nodes:
        n.stop()
    return seen


def expected_view(spec):
    ids, cid = spec.expected()
    members = sorted((ids[name], name, sorted(urls)) for name, _, urls in spec.members)
    return {name: {"member_list_header": (cid, ids[name]), "status_header": (cid, ids[name]),
                   "members": members}
            for name, _, _ in spec.members}


# ---- static clusters ----------------------------------------------------

@pytest.mark.parametrize("peer_counts", [[1], [1, 1, 1], [2], [2, 3, 1]],
                         ids=["one", "three", "one-2urls", "three-multi-urls"])
def test_static_cluster_ids_match_etcd(request, peer_counts):
    spec = Spec("ids-token-%d" % len(peer_counts), peer_counts)
    ref = run_cluster(request, ETCD, spec, "ref")
    assert ref == expected_view(spec)  # the derivation above is etcd's
    sut = run_cluster(request, KETCH, spec, "sut")
    assert sut == ref


def test_default_token_and_initial_cluster_from_advertised_urls(request):
    """No --initial-cluster and no token: etcd builds name=url for each
    advertised peer URL and uses the token "etcd-cluster"."""
    spec = Spec("etcd-cluster", [2])

    class Bare(Node):
        def args(self):
            a = super().args()
            for flag in ("--initial-cluster", "--initial-cluster-token"):
                i = a.index(flag)
                del a[i:i + 2]
            return a

    seen = {}
    for label, binary in (("ref", ETCD), ("sut", KETCH)):
        n = Bare(binary, spec, 0, label)
        request.addfinalizer(n.cleanup)
        n.start(wait=False)
        n.wait_ready(timeout=max(READY_TIMEOUT, 30))
        seen[label] = observe([n])
        n.stop()
    assert seen["ref"] == expected_view(spec)
    assert seen["sut"] == seen["ref"]


# ---- restored from a snapshot -------------------------------------------

def offline(tool, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return subprocess.run([tool] + list(args), capture_output=True, text=True, timeout=120,
                          env=env)


def restorer(tool, snap):
    def prepare(nodes):
        for n in nodes:
            r = offline(tool, "snapshot", "restore", snap, "--name", n.name,
                        "--data-dir", n.data_dir,
                        "--initial-cluster", n.spec.initial_cluster(),
                        "--initial-cluster-token", n.spec.token,
                        "--initial-advertise-peer-urls", ",".join(n.urls))
            assert r.returncode == 0, (tool, r.stderr)
    return prepare


def has_key(n):
    r = n.etcdctl("get", "restored/key", "--print-value-only")
    assert r.returncode == 0 and r.stdout == "restored value\n", (r.stdout, r.stderr)


def test_restored_cluster_ids_match_etcd(request):
    work = tempfile.mkdtemp(prefix="ketch-test-ids-")
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    src = Server(binary=ETCD, tmpfs=True, label="ref-src")
    request.addfinalizer(src.cleanup)
    src.start()
    assert src.etcdctl("put", "restored/key", "restored value").returncode == 0
    snap = os.path.join(work, "snap.db")
    r = src.etcdctl("snapshot", "save", snap)
    assert r.returncode == 0, r.stderr
    src.stop()

    spec = Spec("restore-token", [2, 1, 1])
    ref = run_cluster(request, ETCD, spec, "ref", prepare=restorer(ETCDCTL, snap), check=has_key)
    assert ref == expected_view(spec)  # a restored member's IDs: as a static start
    sut = run_cluster(request, KETCH, spec, "sut", prepare=restorer(KETCHCTL, snap),
                      check=has_key)
    assert sut == ref
    sut = run_cluster(request, KETCH, spec, "sut-flag", extra=["--restore-snapshot", snap],
                      check=has_key)
    assert sut == ref


# ---- member add ---------------------------------------------------------

def test_member_add_id_as_etcd(request):
    """`member add` (a learner, so the one-member cluster keeps its quorum):
    etcd hashes the peer URLs, an empty cluster name and the Unix time."""
    for binary in (ETCD, KETCH):
        spec = Spec("add-token", [1])
        n = Node(binary, spec, 0, "ref" if is_etcd(binary) else "sut")
        request.addfinalizer(n.cleanup)
        n.start()
        url = "http://127.0.0.1:%d" % free_ports(1)[0]
        before = int(time.time())
        r = n.etcdctl("member", "add", "new", "--learner", "--peer-urls=" + url)
        after = int(time.time())
        assert r.returncode == 0, r.stderr
        new_id = int(r.stdout.split()[1], 16)
        # ketch takes the next second on a clash with a (removed) member
        window = range(before, after + (1 if is_etcd(binary) else 9))
        assert new_id in {etcd_member_id([url], "", t) for t in window}, (binary, r.stdout)
        assert new_id not in {etcd_member_id([url], spec.token, t) for t in window}
        n.stop()
