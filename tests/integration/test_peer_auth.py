"""etcd's auth across the members of a cluster: users and roles created
through one member, tokens issued by a follower and honoured (or refused)
on every member, auth enable/disable seen everywhere, simple and JWT
tokens; ketchpb.Internal (which trusts the user named in the request) is
not reachable from the client port; the entries the lock and election
services propose are checked at apply as the caller, not as root.

Every wait polls for a condition with a generous bound; nothing here
asserts a timing.

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_peer_auth.py
"""

import os
import shutil
import subprocess
import sys
import tempfile

import grpc
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import is_etcd, server_under_test_binary, start_cluster  # noqa: E402
from test_cluster import leader_of, wait_for  # noqa: E402

from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402
import lockpb as P  # noqa: E402

DENIED = "etcdserver: permission denied"


@pytest.fixture(scope="module")
def jwt_keys():
    d = tempfile.mkdtemp(prefix="ketch-test-peer-jwt-")
    subprocess.run(["openssl", "genrsa", "-out", "rs.key", "2048"], cwd=d, check=True,
                   capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", "rs.key", "-pubout", "-out", "rs.pub"], cwd=d,
                   check=True, capture_output=True)
    yield os.path.join(d, "rs.key"), os.path.join(d, "rs.pub")
    shutil.rmtree(d, ignore_errors=True)


def call(member, stub, method, req, token=None):
    """(True, response) or (False, (code name, details))."""
    with grpc.insecure_channel(member.endpoint) as ch:
        try:
            md = [("token", token)] if token else None
            return True, getattr(stub(ch), method)(req, timeout=10, metadata=md)
        except grpc.RpcError as e:
            return False, (e.code().name, e.details())


def ok(member, *args):
    r = member.etcdctl(*args)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def put(m, key, tok):
    return call(m, rpc_pb2_grpc.KVStub, "Put", rpc_pb2.PutRequest(key=key, value=b"v"), tok)


def get(m, key, tok, serializable=False):
    return call(m, rpc_pb2_grpc.KVStub, "Range",
                rpc_pb2.RangeRequest(key=key, serializable=serializable), tok)


def authenticate(m, name, pw):
    good, r = call(m, rpc_pb2_grpc.AuthStub, "Authenticate",
                   rpc_pb2.AuthenticateRequest(name=name, password=pw))
    assert good, r
    return r.token


def internal_propose_as_root(key):
    """A ketchpb.InternalRequest {put: {key, value "pwned"}, auth_user:
    "root", auth_system: true}, packed by hand (proto/ketch.proto)."""
    put = rpc_pb2.PutRequest(key=key, value=b"pwned").SerializeToString()
    return (b"\x12" + bytes([len(put)]) + put + b"\xa2\x01\x04root" + b"\xb0\x01\x01")


def cluster_with_auth(request, extra=()):
    if is_etcd(server_under_test_binary()):
        pytest.skip("ketch's cluster")
    ms = start_cluster(request, 3, label="peerauth", extra_args=list(extra))
    leader = leader_of(ms)
    f1, f2 = [m for m in ms if m is not leader]
    # users and roles through one follower
    for args in (("user", "add", "root:rootpw"), ("role", "add", "root"),
                 ("user", "grant-role", "root", "root"), ("user", "add", "alice:apw"),
                 ("role", "add", "app"),
                 ("role", "grant-permission", "app", "readwrite", "/app/", "--prefix"),
                 ("role", "grant-permission", "app", "read", "/ro/", "--prefix"),
                 ("role", "grant-permission", "app", "readwrite", "el/", "--prefix"),
                 ("role", "grant-permission", "app", "readwrite", "lk/", "--prefix"),
                 ("user", "grant-role", "alice", "app")):
        ok(f1, *args)
    ok(f2, "auth", "enable")
    # enabled on every member
    for m in ms:
        wait_for(lambda: "user name is empty" in m.etcdctl("get", "x").stderr,
                 what="auth enabled on %s" % m.name)
    return ms, leader, f1, f2


def check_tokens_everywhere(ms, leader, f1, f2):
    tok = authenticate(f1, "alice", "apw")  # issued by a follower
    rtok = authenticate(f2, "root", "rootpw")
    assert put(leader, b"/ro/seed", rtok)[0]
    for i, m in enumerate(ms):
        # allowed where granted (writes forwarded to the leader as alice)
        good, r = put(m, b"/app/%d" % i, tok)
        assert good, (m.name, r)
        good, r = get(m, b"/app/%d" % i, tok)
        assert good and r.kvs[0].value == b"v", (m.name, r)
        good, r = get(m, b"/ro/seed", tok)
        assert good and r.count == 1, (m.name, r)
        # denied where not
        assert put(m, b"/other", tok) == (False, ("PERMISSION_DENIED", DENIED)), m.name
        assert put(m, b"/ro/x", tok) == (False, ("PERMISSION_DENIED", DENIED)), m.name
        assert get(m, b"/other", tok) == (False, ("PERMISSION_DENIED", DENIED)), m.name
        assert get(m, b"/other", tok, serializable=True) == \
            (False, ("PERMISSION_DENIED", DENIED)), m.name
        assert put(m, b"/x", "bogus.123")[1][1] == "etcdserver: invalid auth token"
        # etcdctl with a password, through each member
        r = m.etcdctl("--user", "alice:apw", "put", "/app/ctl%d" % i, "1")
        assert r.returncode == 0, r.stderr
        r = m.etcdctl("--user", "alice:apw", "put", "/nope", "1")
        assert r.returncode != 0 and DENIED in r.stderr

    # ketchpb.Internal/Propose from a client, "as root": unknown, nothing written
    for m in ms:
        with grpc.insecure_channel(m.endpoint) as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/ketchpb.Internal/Propose")(
                    internal_propose_as_root(b"/other/pwn"), timeout=5,
                    metadata=[("token", tok)])
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert e.value.details() == "unknown service ketchpb.Internal"
    good, r = get(leader, b"/other/pwn", rtok)
    assert good and r.count == 0

    # disable through a follower: seen on every member
    r = f1.etcdctl("--user", "root:rootpw", "auth", "disable")
    assert r.returncode == 0, r.stderr
    for m in ms:
        wait_for(lambda: m.etcdctl("get", "/app/0").returncode == 0,
                 what="auth disabled on %s" % m.name)
        assert m.etcdctl("get", "/app/0").stdout.split() == ["/app/0", "v"]


def test_simple_tokens_across_members(request):
    check_tokens_everywhere(*cluster_with_auth(request))


def test_jwt_tokens_across_members(request, jwt_keys):
    key, pub = jwt_keys
    spec = "jwt,pub-key=%s,priv-key=%s,sign-method=RS256,ttl=10m" % (pub, key)
    check_tokens_everywhere(*cluster_with_auth(request, ["--auth-token", spec]))


def test_lock_and_election_checked_as_the_caller(request):
    ms, leader, f1, f2 = cluster_with_auth(request)
    tok = authenticate(f1, "alice", "apw")
    rtok = authenticate(leader, "root", "rootpw")
    for m in (f1, leader):
        # Proclaim on a leader key outside the election's prefix: the
        # request-time check sees only the name ("el/"); the guarded txn on
        # "/secret/x" (absent: create revision 0) is refused at apply
        lk = P.LeaderKey(name=b"el", key=b"/secret/" + m.name.encode(), rev=0, lease=0)
        good, r = call(m, P.ElectionStub, "Proclaim", P.ProclaimRequest(leader=lk, value=b"x"),
                       tok)
        assert not good and DENIED in r[1], (m.name, r)
        good, r = get(leader, b"/secret/" + m.name.encode(), rtok)
        assert good and r.count == 0, "proclaim wrote outside the caller's permissions"
        # Resign likewise may not delete what the caller cannot
        assert put(leader, b"/secret/keep", rtok)[0]
        good, r = get(leader, b"/secret/keep", rtok)
        lk = P.LeaderKey(name=b"el", key=b"/secret/keep", rev=r.kvs[0].create_revision, lease=0)
        good, r = call(m, P.ElectionStub, "Resign", P.ResignRequest(leader=lk), tok)
        assert not good and DENIED in r[1], (m.name, r)
        good, r = get(leader, b"/secret/keep", rtok)
        assert good and r.count == 1
        # what the caller may do still works, through any member
        good, r = call(m, P.LockStub, "Lock", P.LockRequest(name=b"lk"), tok)
        assert good and r.key.startswith(b"lk/"), r
        good, u = call(m, P.LockStub, "Unlock", P.UnlockRequest(key=r.key), tok)
        assert good, u
        good, c = call(m, P.ElectionStub, "Campaign", P.CampaignRequest(name=b"el", value=b"me"),
                       tok)
        assert good and c.leader.key.startswith(b"el/"), c
        good, r = call(m, P.ElectionStub, "Resign", P.ResignRequest(leader=c.leader), tok)
        assert good, r
        # a lock without a token is refused
        good, r = call(m, P.LockStub, "Lock", P.LockRequest(name=b"lk"))
        assert not good and "user name is empty" in r[1], r
