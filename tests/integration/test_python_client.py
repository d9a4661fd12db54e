"""python3-etcd3 (0.12) high-level client against the server under test.

Concrete values are asserted (revisions as etcd counts them on a fresh
single-member server: the first write is revision 2).

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_python_client.py
"""

import os
import sys

import grpc
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import server, _test_deadline  # noqa: E402,F401  (fixtures)

import etcd3  # noqa: E402
from etcd3 import exceptions as etcd_exc  # noqa: E402


@pytest.fixture
def client(server):  # noqa: F811
    c = etcd3.client(host="127.0.0.1", port=server.client_port, timeout=5)
    yield c
    c.close()


class LeaseCmp(etcd3.transactions.BaseCompare):
    """python-etcd3 0.12 has no LEASE compare; build it ourselves."""
    def build_compare(self, compare):
        compare.target = etcd3.etcdrpc.Compare.LEASE
        compare.lease = int(self.value)


def kv(meta):
    return (meta.key, meta.create_revision, meta.mod_revision, meta.version, meta.lease_id)


def test_put_get(client):
    r = client.put("a", "1")
    assert r.header.revision == 2
    r = client.put("a", "2", prev_kv=True)
    assert r.header.revision == 3
    assert r.prev_kv.key == b"a" and r.prev_kv.value == b"1"
    assert (r.prev_kv.create_revision, r.prev_kv.mod_revision, r.prev_kv.version) == (2, 2, 1)
    r = client.put("b", b"\x00\xffbin", prev_kv=True)
    assert not r.HasField("prev_kv")
    v, m = client.get("a")
    assert v == b"2"
    assert kv(m) == (b"a", 2, 3, 2, 0)
    v, m = client.get("b")
    assert v == b"\x00\xffbin"
    assert client.get("missing") == (None, None)
    resp = client.get_response("a", serializable=True)
    assert resp.count == 1 and resp.header.revision == 4 and not resp.more
    # empty value is a value
    client.put("empty", "")
    v, m = client.get("empty")
    assert v == b"" and m.version == 1 and m.mod_revision == 5
    # long key (10 KB) and value (100 KB)
    longkey = "L" * 10240
    client.put(longkey, "x" * 100000)
    v, m = client.get(longkey)
    assert v == b"x" * 100000 and m.key == longkey.encode()


def test_prefix_and_range(client):
    for i, k in enumerate(["foo", "foo/a", "foo/b", "foo/c", "fop", "fo", "bar"]):
        client.put(k, "v%d" % i)
    got = [(m.key, v) for v, m in client.get_prefix("foo")]
    assert got == [(b"foo", b"v0"), (b"foo/a", b"v1"), (b"foo/b", b"v2"), (b"foo/c", b"v3")]
    got = [m.key for v, m in client.get_prefix("foo/", sort_order="descend")]
    assert got == [b"foo/c", b"foo/b", b"foo/a"]
    got = [m.key for v, m in client.get_prefix("fo", sort_order="ascend", sort_target="mod")]
    assert got == [b"foo", b"foo/a", b"foo/b", b"foo/c", b"fop", b"fo"]
    got = [m.key for v, m in client.get_prefix("fo", sort_order="descend", sort_target="create")]
    assert got == [b"fo", b"fop", b"foo/c", b"foo/b", b"foo/a", b"foo"]
    got = [m.key for v, m in client.get_prefix("fo", keys_only=True)]
    assert got == [b"fo", b"foo", b"foo/a", b"foo/b", b"foo/c", b"fop"]
    got = [(v, m.key) for v, m in client.get_prefix("fo", keys_only=True)]
    assert all(v == b"" for v, _ in got)
    # python-etcd3 0.12 drops `limit`; use the raw stub
    r = client.kvstub.Range(etcd3.etcdrpc.RangeRequest(key=b"foo", range_end=b"fop", limit=2), timeout=5)
    assert r.count == 4 and r.more and [kv.key for kv in r.kvs] == [b"foo", b"foo/a"]
    got = [m.key for v, m in client.get_range("foo/a", "fop")]
    assert got == [b"foo/a", b"foo/b", b"foo/c"]
    got = [m.key for v, m in client.get_all()]
    assert got == [b"bar", b"fo", b"foo", b"foo/a", b"foo/b", b"foo/c", b"fop"]
    r = client.get_all_response(sort_order="descend", sort_target="value")
    assert [kv.value for kv in r.kvs] == [b"v6", b"v5", b"v4", b"v3", b"v2", b"v1", b"v0"]
    assert r.header.revision == 8


def test_delete(client):
    for k in ["d/1", "d/2", "d/3", "e"]:
        client.put(k, k + "-val")
    assert client.delete("d/1") is True
    assert client.delete("d/1") is False
    r = client.delete("d/2", prev_kv=True, return_response=True)
    assert r.deleted == 1 and r.header.revision == 7
    assert [(p.key, p.value) for p in r.prev_kvs] == [(b"d/2", b"d/2-val")]
    client.put("d/4", "x")
    r = client.delete_prefix("d/")
    assert r.deleted == 2 and r.header.revision == 9
    assert [m.key for v, m in client.get_all()] == [b"e"]
    r = client.delete_prefix("nothing/")
    assert r.deleted == 0 and r.header.revision == 9
    # a deleted and re-created key starts over at version 1
    client.put("d/1", "again")
    v, m = client.get("d/1")
    assert (v, m.create_revision, m.mod_revision, m.version) == (b"again", 10, 10, 1)


def test_transactions(client):
    client.put("t", "1")          # rev 2
    client.put("t", "2")          # rev 3
    client.put("u", "x")          # rev 4
    tx = client.transactions
    ok, resps = client.transaction(
        compare=[tx.value("t") == "2", tx.version("t") == 2, tx.create("t") == 2,
                 tx.mod("t") == 3, tx.value("u") != "y", tx.version("nokey") == 0],
        success=[tx.put("t", "3"), tx.get("t"), tx.delete("u")],
        failure=[tx.put("t", "fail")])
    assert ok is True
    assert len(resps) == 3
    # python-etcd3 returns the ResponseOp wrappers for put/delete
    assert resps[0].response_put.header.revision == 5
    (val, meta), = resps[1]
    assert val == b"3" and meta.mod_revision == 5 and meta.version == 3
    assert resps[2].response_delete_range.deleted == 1
    assert client.get("u") == (None, None)

    ok, resps = client.transaction(
        compare=[tx.mod("t") < 5],
        success=[tx.put("t", "never")],
        failure=[tx.get("t"), tx.put("f", "1"), tx.get("a", "z")])
    assert ok is False
    (val, meta), = resps[0]
    assert val == b"3"
    assert resps[1].response_put.header.revision == 6
    assert [(v, m.key) for v, m in resps[2]] == [(b"1", b"f"), (b"3", b"t")]
    assert client.get("t")[0] == b"3"

    ok, resps = client.transaction(compare=[tx.create("t") > 1, tx.value("t") > "2"],
                                   success=[], failure=[])
    assert ok is True and resps == []

    # a false compare with an empty failure branch does not bump the revision
    ok, _ = client.transaction(compare=[tx.value("t") < "3"], success=[tx.put("x", "y")], failure=[])
    assert ok is False
    assert client.get_response("t").header.revision == 6

    # nested txn
    ok, resps = client.transaction(
        compare=[tx.value("t") == "3"],
        success=[tx.txn(compare=[tx.version("t") == 99], success=[tx.put("n", "s")],
                        failure=[tx.put("n", "f"), tx.get("n")])],
        failure=[])
    assert ok is True
    inner = resps[0].response_txn
    assert inner.succeeded is False
    assert inner.responses[0].response_put.header.revision == inner.responses[1].response_range.header.revision
    assert inner.responses[1].response_range.kvs[0].value == b"f"
    assert client.get("n")[0] == b"f"

    # duplicate key in one txn -> INVALID_ARGUMENT with etcd's text
    with pytest.raises(grpc.RpcError) as ei:
        client.transaction(compare=[], success=[tx.put("dup", "1"), tx.put("dup", "2")], failure=[])
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == "etcdserver: duplicate key given in txn request"


def test_lease_compare_in_txn(client):
    tx = client.transactions
    lease = client.lease(300, lease_id=0x1234)
    assert lease.id == 0x1234
    client.put("leased", "v", lease=lease)
    ok, _ = client.transaction(
        compare=[LeaseCmp("leased") == 0x1234, LeaseCmp("lease-ok") == 0],
        success=[tx.put("lease-ok", "1")], failure=[])
    assert ok is True
    v, m = client.get("leased")
    assert m.lease_id == 0x1234
    assert client.get("lease-ok")[0] == b"1"
    ok, _ = client.transaction(compare=[LeaseCmp("leased") != 0x1234], success=[], failure=[])
    assert ok is False
    ok, _ = client.transaction(compare=[LeaseCmp("leased") > 0x1000], success=[], failure=[])
    assert ok is True
    lease.revoke()
    assert client.get("leased") == (None, None)


def test_replace_and_put_if_not_exists(client):
    client.put("r", "old")
    assert client.replace("r", "wrong", "new") is False
    assert client.get("r")[0] == b"old"
    assert client.replace("r", "old", "new") is True
    assert client.get("r")[0] == b"new"
    assert client.replace("nokey", "", "x") is False
    assert client.put_if_not_exists("p", "1") is True
    assert client.put_if_not_exists("p", "2") is False
    assert client.get("p")[0] == b"1"


def test_compaction_and_errors(client):
    for i in range(5):
        client.put("c", str(i))   # revs 2..6
    v, m = client.get("c")
    assert v == b"4" and m.mod_revision == 6 and m.version == 5
    r = client.get_response("c")
    assert r.header.revision == 6
    client.compact(4)
    with pytest.raises(grpc.RpcError) as ei:
        client.kvstub.Range(etcd3.etcdrpc.RangeRequest(key=b"c", revision=3), timeout=5)
    assert ei.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert ei.value.details() == "etcdserver: mvcc: required revision has been compacted"
    r = client.kvstub.Range(etcd3.etcdrpc.RangeRequest(key=b"c", revision=4), timeout=5)
    assert r.kvs[0].value == b"2"
    with pytest.raises(grpc.RpcError) as ei:
        client.kvstub.Range(etcd3.etcdrpc.RangeRequest(key=b"c", revision=7), timeout=5)
    assert ei.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert ei.value.details() == "etcdserver: mvcc: required revision is a future revision"
    with pytest.raises(grpc.RpcError) as ei:
        client.compact(3)
    assert ei.value.details() == "etcdserver: mvcc: required revision has been compacted"
    client.compact(6, physical=True)
    with pytest.raises(grpc.RpcError) as ei:
        client.put("", "v")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == "etcdserver: key is not provided"


def test_status_and_members(server, client):  # noqa: F811
    client.put("s", "1")
    st = client.status()
    assert st.version.startswith("3.")
    assert st.db_size > 0
    assert st.raft_index >= 1 and st.raft_term >= 1
    members = list(client.members)
    assert len(members) == 1
    m = members[0]
    assert m.name == "default"
    assert m.id != 0
    assert list(m.peer_urls) == [server.peer_url]
    assert list(m.client_urls) == [server.client_url]
    assert st.leader is not None and st.leader.id == m.id
    h = client.get_response("s").header
    assert h.member_id == m.id and h.cluster_id != 0 and h.revision == 2 and h.raft_term == st.raft_term


def test_leases(client):
    lease = client.lease(100)
    assert lease.id != 0
    client.put("l1", "a", lease=lease)
    client.put("l2", "b", lease=lease.id)
    info = client.get_lease_info(lease.id)
    assert info.ID == lease.id and info.grantedTTL == 100 and 95 <= info.TTL <= 100
    r = client.leasestub.LeaseTimeToLive(
        etcd3.etcdrpc.LeaseTimeToLiveRequest(ID=lease.id, keys=True), timeout=5)
    assert sorted(r.keys) == [b"l1", b"l2"]
    refreshed = list(client.refresh_lease(lease.id))
    assert refreshed[0].ID == lease.id and refreshed[0].TTL == 100
    with pytest.raises(etcd_exc.PreconditionFailedError):      # FAILED_PRECONDITION
        client.lease(100, lease_id=lease.id)
    with pytest.raises(grpc.RpcError) as ei:
        client.leasestub.LeaseGrant(etcd3.etcdrpc.LeaseGrantRequest(TTL=100, ID=lease.id), timeout=5)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ei.value.details() == "etcdserver: lease already exists"
    client.revoke_lease(lease.id)
    assert client.get("l1") == (None, None) and client.get("l2") == (None, None)
    with pytest.raises(grpc.RpcError) as ei:
        client.revoke_lease(0x999)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert ei.value.details() == "etcdserver: requested lease not found"

    info = client.get_lease_info(lease.id)
    assert info.TTL == -1
    # a short lease expires by itself
    short = client.lease(1)
    client.put("ephemeral", "x", lease=short)
    assert client.get("ephemeral")[0] == b"x"
    import time
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and client.get("ephemeral")[0] is not None:
        time.sleep(0.2)
    assert client.get("ephemeral") == (None, None)
