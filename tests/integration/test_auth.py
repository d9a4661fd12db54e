"""etcd's Auth API: users, roles, key-range permissions, tokens.

Debian's etcdctl runs the same commands on the server under test and on a
reference etcd (stdout, exit code and error texts must match); raw gRPC
calls (python3-etcd3's generated stubs) check token behaviour and watch
permissions on both; python3-etcd3 with user/password, restarts (SIGTERM
and kill -9) keeping users, roles and the enabled flag, the TLS client
certificate's CN as the user, JWT tokens, and the JSON gateway's
/v3/auth/* routes.

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_auth.py
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from harness import ETCD, Server, run_etcdctl, is_etcd, server_under_test_binary, start_pair, _test_deadline  # noqa: E402,F401
from test_etcdctl import Pair  # noqa: E402

import grpc  # noqa: E402
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from etcd3.etcdrpc import auth_pb2  # noqa: E402

ROOT = ("root", "rootpw")


@pytest.fixture
def pair(request):
    sut, ref = start_pair(request)
    return Pair(sut, ref)


class One:
    """Runs etcdctl commands on one server (setup_users' `p` without a
    reference to compare with)."""

    def __init__(self, run):
        self._run = run

    def ok(self, *args, stdin=None):
        r = self._run(*args, stdin=stdin)
        assert r.returncode == 0, (args, r.stderr)
        return r


def setup_users(p):
    """root (root role), alice (role r1), bob (no roles); auth not enabled."""
    for cmd in (["user", "add", "root:rootpw"], ["role", "add", "root"],
                ["user", "grant-role", "root", "root"], ["user", "add", "alice:apw"],
                ["user", "add", "bob:bpw"], ["role", "add", "r1"],
                ["role", "grant-permission", "r1", "readwrite", "/a/", "--prefix"],
                ["role", "grant-permission", "r1", "read", "zz", "--from-key"],
                ["role", "grant-permission", "r1", "write", "k1"],
                ["role", "grant-permission", "r1", "read", "k1"],
                ["role", "grant-permission", "r1", "readwrite", "m", "p"],
                ["user", "grant-role", "alice", "r1"]):
        p.ok(*cmd)


def test_etcdctl_users_and_roles(pair):
    p = pair
    p.fail("auth", "enable")                       # root user does not exist
    p.ok("user", "add", "root:rootpw")
    # etcdctl answers "root user does not have root role" by adding the
    # role and granting it, then enables
    p.ok("auth", "enable")
    p.ok("--user", "root:rootpw", "auth", "disable")
    p.fail("role", "add", "root")
    setup_users_rest = [["user", "add", "alice:apw"], ["role", "add", "r1"]]
    for cmd in setup_users_rest:
        p.ok(*cmd)
    p.fail("user", "add", "alice:other")           # already exists
    p.fail("role", "add", "r1")
    p.fail("user", "get", "nobody")
    p.fail("role", "get", "nobody")
    p.fail("user", "grant-role", "alice", "nope")
    p.fail("user", "grant-role", "nobody", "r1")
    p.fail("user", "revoke-role", "alice", "r1")   # not granted
    p.fail("role", "revoke-permission", "r1", "x")
    p.fail("role", "grant-permission", "nope", "read", "x")
    p.ok("role", "grant-permission", "r1", "read", "/b/", "--prefix")
    p.ok("role", "grant-permission", "r1", "write", "/b/", "--prefix")   # replaces the type
    p.ok("role", "grant-permission", "r1", "readwrite", "/a", "--from-key")
    p.ok("role", "grant-permission", "r1", "read", "k")
    p.ok("role", "grant-permission", "r1", "write", "c", "d")
    p.ok("role", "get", "r1")
    p.ok("role", "revoke-permission", "r1", "c", "d")
    p.ok("role", "revoke-permission", "r1", "/a", "--from-key")
    p.ok("role", "get", "r1")
    p.ok("user", "grant-role", "alice", "r1")
    p.ok("user", "grant-role", "alice", "r1")      # again: no change
    p.ok("user", "add", "nopw", "--no-password")
    p.ok("user", "get", "alice")
    p.ok("user", "get", "alice", "--detail")
    p.ok("user", "get", "root")
    p.ok("user", "list")
    p.ok("role", "list")
    p.ok("user", "list", "-w", "json")
    p.ok("role", "get", "r1", "-w", "json")
    p.ok("user", "passwd", "alice", "--interactive=false", stdin="newpw\n")
    p.ok("role", "add", "r2")
    p.ok("user", "grant-role", "alice", "r2")
    p.ok("role", "delete", "r2")                  # revoked from alice too
    p.ok("user", "get", "alice")
    p.ok("user", "revoke-role", "alice", "r1")
    p.ok("user", "get", "alice")
    p.ok("user", "delete", "alice")
    p.fail("user", "delete", "alice")
    p.fail("role", "delete", "r2")
    p.ok("auth", "enable")
    p.ok("auth", "enable", "--user", "root:rootpw")   # already enabled: fine
    p.ok("--user", "root:rootpw", "user", "list")
    p.ok("--user", "root:rootpw", "auth", "disable")
    p.ok("auth", "disable")                        # already disabled: fine


def test_etcdctl_permissions(pair):
    p = pair
    setup_users(p)
    p.ok("put", "foo", "bar")
    p.ok("put", "/a/1", "one")
    p.ok("auth", "enable")
    R = "--user=root:rootpw"
    A = "--user=alice:apw"
    B = "--user=bob:bpw"
    p.fail("get", "foo")                           # user name is empty
    p.fail("put", "foo", "x")
    p.ok(R, "get", "foo")
    p.ok(R, "put", "foo", "baz")
    p.fail("--user=root:wrong", "get", "foo")      # authentication failed
    p.fail("--user=nobody:x", "get", "foo")
    p.ok(A, "put", "/a/2", "two")
    p.ok(A, "get", "/a/", "--prefix")
    p.ok(A, "get", "/a/1", "-w", "json")
    p.fail(A, "get", "foo")                        # permission denied
    p.fail(A, "put", "foo", "x")
    p.fail(A, "get", "/a", "--prefix")             # [/a, /b) is wider than /a/
    p.ok(A, "get", "zz")
    p.ok(A, "get", "zzz", "--from-key")
    p.fail(A, "get", "zy", "--from-key")
    p.fail(A, "put", "zz", "v")                    # read only
    p.fail(A, "put", "k1", "v")                    # "read k1" replaced "write k1"
    p.ok(R, "role", "grant-permission", "r1", "readwrite", "k1")
    p.ok(A, "put", "k1", "v")
    p.ok(A, "put", "k1", "w", "--prev-kv")         # read+write on k1
    p.ok(A, "get", "m", "p")
    p.ok(A, "get", "n", "o")
    p.fail(A, "get", "m", "q")
    p.ok(A, "del", "/a/2", "--prev-kv")
    p.ok(A, "del", "/a/", "--prefix")
    p.fail(A, "del", "foo")
    p.fail(B, "get", "/a/1")                       # no roles at all
    p.ok(A, "txn", "--interactive=false",
         stdin='value("k1") = "w"\n\nput /a/t 1\n\nput /a/f 1\n\n')
    p.fail(A, "txn", "--interactive=false",
           stdin='value("foo") = "w"\n\nput /a/t 1\n\n\n')        # compare on foo
    p.fail(A, "txn", "--interactive=false",
           stdin='value("k1") = "w"\n\nput /a/t 1\n\nget foo\n\n')  # else branch reads foo
    p.fail(A, "user", "list")                      # admin only
    p.fail(A, "role", "list")
    p.fail(A, "user", "add", "carol:x")
    p.fail(A, "auth", "disable")
    p.ok(A, "user", "get", "alice")                # oneself: allowed
    p.fail(A, "user", "get", "bob")
    p.ok(A, "role", "get", "r1")                   # a role one has: allowed
    p.fail(A, "role", "get", "root")
    p.fail(R, "user", "delete", "root")            # invalid auth management
    p.fail(R, "user", "revoke-role", "root", "root")
    p.fail(R, "role", "delete", "root")
    p.ok(R, "user", "get", "root")
    p.ok(R, "compaction", "2")
    for srv in (p.ref, p.sut):
        lease = p.raw(srv, R, "lease", "grant", "100").stdout.split()[1]
        p.subst[srv][lease] = "<lease>"
    p.ok(R, "put", "foo", "x", "--lease=<lease>")
    p.fail(A, "put", "/a/l", "x", "--lease=<lease>")   # the lease holds foo: no write on it
    p.fail(A, "lease", "revoke", "<lease>")
    p.ok(R, "lease", "revoke", "<lease>")
    p.ok(R, "auth", "disable")
    p.ok("get", "foo")
    p.ok("get", "", "--from-key", "--keys-only")


def grpc_call(endpoint, stub_cls, method, req, token=None):
    ch = grpc.insecure_channel(endpoint)
    try:
        md = [("token", token)] if token else None
        return getattr(stub_cls(ch), method)(req, timeout=10, metadata=md)
    finally:
        ch.close()


def grpc_err(endpoint, stub_cls, method, req, token=None):
    try:
        grpc_call(endpoint, stub_cls, method, req, token)
    except grpc.RpcError as e:
        return (e.code().name, e.details())
    return None


def authenticate(endpoint, name, password):
    return grpc_call(endpoint, rpc_pb2_grpc.AuthStub, "Authenticate",
                     rpc_pb2.AuthenticateRequest(name=name, password=password)).token


def test_tokens_and_watch_against_etcd(pair):
    p = pair
    setup_users(p)
    p.ok("auth", "enable")
    res = {}
    for srv in (p.ref, p.sut):
        ep = srv.endpoint
        out = []
        out.append(grpc_err(ep, rpc_pb2_grpc.KVStub, "Range", rpc_pb2.RangeRequest(key=b"/a/1"),
                            token="bogus.1"))
        out.append(grpc_err(ep, rpc_pb2_grpc.KVStub, "Put",
                            rpc_pb2.PutRequest(key=b"/a/1", value=b"x"), token="bogus.1"))
        try:
            authenticate(ep, "alice", "nope")
            out.append("no error")
        except grpc.RpcError as e:
            out.append((e.code().name, e.details()))
        tok = authenticate(ep, "alice", "apw")
        assert tok
        out.append(grpc_err(ep, rpc_pb2_grpc.KVStub, "Put",
                            rpc_pb2.PutRequest(key=b"/a/1", value=b"x"), token=tok))
        out.append(grpc_err(ep, rpc_pb2_grpc.KVStub, "Put",
                            rpc_pb2.PutRequest(key=b"/b", value=b"x"), token=tok))
        out.append(grpc_err(ep, rpc_pb2_grpc.KVStub, "Range",
                            rpc_pb2.RangeRequest(key=b"/a/", range_end=b"/a0"), token=tok))
        out.append(grpc_err(ep, rpc_pb2_grpc.KVStub, "DeleteRange",
                            rpc_pb2.DeleteRangeRequest(key=b"zz", prev_kv=True), token=tok))
        # watches: permitted and not
        ch = grpc.insecure_channel(ep)
        try:
            stub = rpc_pb2_grpc.WatchStub(ch)
            reqs = iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                             key=b"/a/", range_end=b"/a0")),
                         rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                             key=b"foo"))])
            it = stub.Watch(reqs, timeout=10, metadata=[("token", tok)])
            w1 = next(it)
            w2 = next(it)
            out.append((w1.created, w1.canceled, w1.cancel_reason))
            out.append((w2.created, w2.canceled, w2.watch_id, w2.cancel_reason))
            it.cancel()
        finally:
            ch.close()
        # the token of a deleted user dies with it; a new password kills old tokens
        rtok = authenticate(ep, *ROOT)
        btok = authenticate(ep, "bob", "bpw")
        grpc_call(ep, rpc_pb2_grpc.AuthStub, "UserChangePassword",
                  rpc_pb2.AuthUserChangePasswordRequest(name="alice", password="apw2"), token=rtok)
        out.append(grpc_err(ep, rpc_pb2_grpc.KVStub, "Range", rpc_pb2.RangeRequest(key=b"/a/1"),
                            token=tok))
        grpc_call(ep, rpc_pb2_grpc.AuthStub, "UserDelete",
                  rpc_pb2.AuthUserDeleteRequest(name="bob"), token=rtok)
        out.append(grpc_err(ep, rpc_pb2_grpc.KVStub, "Range", rpc_pb2.RangeRequest(key=b"/a/1"),
                            token=btok))
        # header of an auth response, admin checks
        r = grpc_call(ep, rpc_pb2_grpc.AuthStub, "UserGet",
                      rpc_pb2.AuthUserGetRequest(name="alice"), token=rtok)
        out.append((list(r.roles), r.header.revision))
        out.append(grpc_err(ep, rpc_pb2_grpc.AuthStub, "UserList", rpc_pb2.AuthUserListRequest()))
        res[srv] = out
    assert res[p.sut] == res[p.ref]
    # etcd 3.4 panics on a grant without a permission; 3.5 answers this
    rtok = authenticate(p.sut.endpoint, *ROOT)
    assert grpc_err(p.sut.endpoint, rpc_pb2_grpc.AuthStub, "RoleGrantPermission",
                    rpc_pb2.AuthRoleGrantPermissionRequest(name="r1"), token=rtok) == (
        "INVALID_ARGUMENT", "etcdserver: permission not given")


def test_lock_and_election_permissions(pair):
    import lockpb as P
    p = pair
    setup_users(p)
    p.ok("auth", "enable")
    res = {}
    for srv in (p.ref, p.sut):
        ep = srv.endpoint
        tok = authenticate(ep, "alice", "apw")
        ch = grpc.insecure_channel(ep)
        lock, el = P.LockStub(ch), P.ElectionStub(ch)

        def call(fn, req, token=tok):
            try:
                r = fn(req, timeout=10, metadata=[("token", token)] if token else None)
                return ("OK", r)
            except grpc.RpcError as e:
                return (e.code().name, e.details())
        out = []
        code, r = call(lock.Lock, P.LockRequest(name=b"/a/l"))
        out.append((code, r.key.startswith(b"/a/l/") if code == "OK" else r))
        if code == "OK":
            out.append(call(lock.Unlock, P.UnlockRequest(key=r.key))[0])
        out.append(call(lock.Lock, P.LockRequest(name=b"x")))
        out.append(call(lock.Lock, P.LockRequest(name=b"/a/l"), token=None))
        out.append(call(el.Campaign, P.CampaignRequest(name=b"x", value=b"v")))
        code, r = call(el.Campaign, P.CampaignRequest(name=b"/a/e", value=b"v"))
        out.append(code)
        out.append(call(el.Leader, P.LeaderRequest(name=b"/a/e"))[0])
        out.append(call(el.Leader, P.LeaderRequest(name=b"foo")))
        ch.close()
        res[srv] = out
    assert res[p.sut] == res[p.ref]


def test_python_etcd3_with_password(request, keys):
    """python3-etcd3 sends its token as call credentials, which grpc-python
    only sends over TLS: serve TLS (no client certificates)."""
    import etcd3
    args = ["--cert-file", keys("server.pem"), "--key-file", keys("server.key")]
    s = Server(scheme="https", extra_args=args, label="tls")
    request.addfinalizer(s.cleanup)
    s.start()
    url = "https://127.0.0.1:%d" % s.client_port
    setup_users(One(lambda *a, stdin=None: run_etcdctl(url, "--cacert", keys("ca.pem"), *a,
                                                       stdin=stdin)))
    assert run_etcdctl(url, "--cacert", keys("ca.pem"), "auth", "enable").returncode == 0

    def client(user, password):
        return etcd3.client(host="127.0.0.1", port=s.client_port, ca_cert=keys("ca.pem"),
                            user=user, password=password, timeout=10)
    c = client("alice", "apw")
    c.put("/a/py", "v1")
    val, meta = c.get("/a/py")
    assert val == b"v1"
    assert [m.key for _, m in c.get_prefix("/a/")] == [b"/a/py"]
    with pytest.raises(Exception) as ei:
        c.put("/forbidden", "x")
    assert "permission denied" in repr(ei.value)
    c.close()
    with pytest.raises(Exception) as ei:
        client("alice", "bad")
    assert "authentication failed" in repr(ei.value)
    rc = client("root", "rootpw")
    assert rc.get("/a/py")[0] == b"v1"
    rc.close()


def wait_auth_ready(s, timeout=15):
    """After a restart with auth enabled the harness' anonymous probe is
    refused: poll with root's password instead."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert s.running(), s.log_tail()
        r = s.etcdctl("--user=root:rootpw", "get", "foo")
        if r.returncode == 0:
            return r
        last = r.stderr
        time.sleep(0.1)
    raise AssertionError("not ready: %s" % last)


def test_restart_keeps_auth(request):
    s = Server(label="sut")
    request.addfinalizer(s.cleanup)
    s.start()
    setup_users(One(s.etcdctl))
    assert s.etcdctl("put", "foo", "bar").returncode == 0
    assert s.etcdctl("auth", "enable").returncode == 0
    before = s.etcdctl("--user=root:rootpw", "role", "get", "r1").stdout
    for how in ("stop", "kill"):
        getattr(s, how)()
        s.start(wait=False)
        wait_auth_ready(s)
        r = s.etcdctl("get", "foo")
        assert r.returncode != 0 and "user name is empty" in r.stderr, r.stderr
        assert s.etcdctl("--user=root:rootpw", "role", "get", "r1").stdout == before
        r = s.etcdctl("--user=alice:apw", "put", "/a/after-" + how, "1")
        assert r.returncode == 0, r.stderr
        r = s.etcdctl("--user=alice:wrong", "get", "/a/1")
        assert "authentication failed" in r.stderr
        r = s.etcdctl("--user=root:rootpw", "user", "list")
        assert r.stdout.split() == ["alice", "bob", "root"], r.stdout
    r = s.etcdctl("--user=root:rootpw", "get", "/a/", "--prefix", "--keys-only")
    assert r.stdout.split() == ["/a/after-kill", "/a/after-stop"], r.stdout
    # auth revision survives too: the status endpoint of the gateway reports it
    st = http_post(s, "/v3/auth/status", {})
    assert st["enabled"] is True and int(st["authRevision"]) >= 12, st


def sh(cwd, *cmd):
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def keys():
    d = tempfile.mkdtemp(prefix="ketch-test-authkeys-")
    sh(d, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
       "-out", "ca.pem", "-days", "30", "-subj", "/CN=ca")
    for name, cn, ext in (("server", "server", "subjectAltName=IP:127.0.0.1\n"
                           "extendedKeyUsage=serverAuth,clientAuth\n"),
                          ("alice", "alice", "extendedKeyUsage=clientAuth\n"),
                          ("root", "root", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext)
        sh(d, "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
           "-out", name + ".csr", "-subj", "/CN=" + cn)
        sh(d, "openssl", "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
           "-CAcreateserial", "-out", name + ".pem", "-days", "30", "-extfile", name + ".ext")
    sh(d, "openssl", "genrsa", "-out", "jwt-rs.key", "2048")
    sh(d, "openssl", "rsa", "-in", "jwt-rs.key", "-pubout", "-out", "jwt-rs.pub")
    sh(d, "openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "jwt-ec.key")
    sh(d, "openssl", "ec", "-in", "jwt-ec.key", "-pubout", "-out", "jwt-ec.pub")
    yield lambda n: os.path.join(d, n)
    shutil.rmtree(d, ignore_errors=True)


def test_client_cert_cn_is_the_user(request, keys):
    args = ["--cert-file", keys("server.pem"), "--key-file", keys("server.key"),
            "--trusted-ca-file", keys("ca.pem"), "--client-cert-auth"]
    s = Server(scheme="https", extra_args=args, label="tls",
               tls_client=(keys("ca.pem"), keys("root.pem"), keys("root.key")))
    request.addfinalizer(s.cleanup)
    s.start()
    url = "https://127.0.0.1:%d" % s.client_port

    def ctl(cert, *a):
        return run_etcdctl(url, "--cacert", keys("ca.pem"), "--cert", keys(cert + ".pem"),
                           "--key", keys(cert + ".key"), *a)
    setup_users(One(lambda *a, stdin=None: ctl("root", *a)))
    assert ctl("root", "put", "foo", "bar").returncode == 0
    assert ctl("root", "auth", "enable").returncode == 0
    # no token: the certificate's CN speaks
    r = ctl("alice", "put", "/a/cn", "1")
    assert r.returncode == 0, r.stderr
    r = ctl("alice", "get", "foo")
    assert r.returncode != 0 and "permission denied" in r.stderr, r.stderr
    r = ctl("root", "get", "foo")
    assert r.stdout.split() == ["foo", "bar"], r.stderr
    # a password login still wins over the CN
    r = ctl("alice", "--user=root:rootpw", "get", "foo")
    assert r.stdout.split() == ["foo", "bar"], r.stderr
    r = ctl("alice", "user", "list")
    assert "permission denied" in r.stderr


def jwt_claims(tok):
    part = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest.mark.parametrize("method", ["RS256", "ES256"])
def test_jwt_tokens(request, keys, method):
    kind = "rs" if method.startswith("RS") else "ec"
    spec = "jwt,pub-key=%s,priv-key=%s,sign-method=%s,ttl=10m" % (
        keys("jwt-%s.pub" % kind), keys("jwt-%s.key" % kind), method)
    servers = [Server(label="sut", extra_args=["--auth-token", spec])]
    if not is_etcd(server_under_test_binary()):
        servers.append(Server(binary=ETCD, tmpfs=True, label="ref", extra_args=["--auth-token", spec]))
    out = {}
    for s in servers:
        request.addfinalizer(s.cleanup)
        s.start()
        setup_users(One(s.etcdctl))
        assert s.etcdctl("auth", "enable").returncode == 0
        ep = s.endpoint
        tok = authenticate(ep, "alice", "apw")
        hdr = json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))
        cl = jwt_claims(tok)
        assert hdr["alg"] == method and cl["username"] == "alice"
        assert 500 < cl["exp"] - time.time() <= 600
        res = [grpc_err(ep, rpc_pb2_grpc.KVStub, "Put",
                        rpc_pb2.PutRequest(key=b"/a/j", value=b"1"), token=tok)]
        forged = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
        res.append(grpc_err(ep, rpc_pb2_grpc.KVStub, "Put",
                            rpc_pb2.PutRequest(key=b"/a/j", value=b"1"), token=forged))
        # any auth change makes older JWTs stale
        rtok = authenticate(ep, *ROOT)
        grpc_call(ep, rpc_pb2_grpc.AuthStub, "RoleAdd", rpc_pb2.AuthRoleAddRequest(name="r9"),
                  token=rtok)
        res.append(grpc_err(ep, rpc_pb2_grpc.KVStub, "Put",
                            rpc_pb2.PutRequest(key=b"/a/j", value=b"2"), token=tok))
        res.append(grpc_err(ep, rpc_pb2_grpc.KVStub, "Range",
                            rpc_pb2.RangeRequest(key=b"/a/j"), token=tok))
        # etcdctl re-authenticates by itself
        r = s.etcdctl("--user=alice:apw", "get", "/a/j", "--print-value-only")
        res.append((r.returncode, r.stdout.strip()))
        out[s.label] = res
    assert out["sut"][0] is None
    assert out["sut"][1] == ("UNAUTHENTICATED", "etcdserver: invalid auth token")
    assert out["sut"][2] == ("INVALID_ARGUMENT", "etcdserver: revision of auth store is old")
    if "ref" in out:
        assert out["sut"] == out["ref"]


def http_post(s, path, body, token=None, expect_error=False):
    req = urllib.request.Request("http://%s%s" % (s.endpoint, path),
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return {"http": e.code, **json.loads(e.read())}


def test_gateway_auth_routes(pair):
    def b64(s):
        return base64.b64encode(s.encode()).decode()
    steps = [
        ("/v3/auth/user/add", {"name": "root", "password": "rootpw"}, None),
        ("/v3/auth/role/add", {"name": "root"}, None),
        ("/v3/auth/user/grant", {"user": "root", "role": "root"}, None),
        ("/v3/auth/user/add", {"name": "alice", "password": "apw"}, None),
        ("/v3/auth/user/add", {"name": "alice", "password": "apw"}, None),
        ("/v3/auth/role/add", {"name": "r1"}, None),
        ("/v3/auth/role/grant", {"name": "r1", "perm": {"permType": "READWRITE", "key": b64("/a/"),
                                                        "range_end": b64("/a0")}}, None),
        ("/v3/auth/role/grant", {"name": "r1", "perm": {"key": b64("k")}}, None),
        ("/v3/auth/user/grant", {"user": "alice", "role": "r1"}, None),
        ("/v3/auth/role/get", {"role": "r1"}, None),
        ("/v3/auth/role/revoke", {"role": "r1", "key": b64("k")}, None),
        ("/v3/auth/user/get", {"name": "alice"}, None),
        ("/v3/auth/user/list", {}, None),
        ("/v3/auth/role/list", {}, None),
        ("/v3/auth/user/changepw", {"name": "alice", "password": "apw2"}, None),
        ("/v3/auth/enable", {}, None),
        ("/v3/kv/range", {"key": b64("/a/1")}, None),
        ("/v3/auth/authenticate", {"name": "alice", "password": "apw"}, None),
        ("/v3/auth/authenticate", {"name": "alice", "password": "apw2"}, None),
        ("/v3/kv/put", {"key": b64("/a/1"), "value": b64("v")}, "alice"),
        ("/v3/kv/range", {"key": b64("/a/1")}, "alice"),
        ("/v3/kv/put", {"key": b64("/b"), "value": b64("v")}, "alice"),
        ("/v3/kv/range", {"key": b64("/a/1")}, "bogus"),
        ("/v3/auth/user/revoke", {"name": "alice", "role": "r1"}, "root"),
        ("/v3/auth/role/delete", {"role": "r1"}, "root"),
        ("/v3/auth/user/delete", {"name": "alice"}, "root"),
        ("/v3/auth/disable", {}, "root"),
    ]
    res = {}
    for srv in (pair.ref, pair.sut):
        tokens = {"bogus": "bogus.7"}
        out = []
        for path, body, who in steps:
            if who and who not in tokens:
                pw = {"alice": "apw2", "root": "rootpw"}[who]
                tokens[who] = http_post(srv, "/v3/auth/authenticate",
                                        {"name": who, "password": pw})["token"]
            r = http_post(srv, path, body, token=tokens.get(who))
            r.pop("header", None)
            if r.get("code") == 9:
                # FAILED_PRECONDITION: 412 from etcd 3.4's grpc-gateway
                # v1.9, 400 from etcd 3.5's v1.16 (what ketch follows)
                assert r.pop("http") == (412 if srv is pair.ref else 400)
            if "token" in r:
                r["token"] = "<token>"
            out.append((path, r))
        res[srv] = out
    for a, b in zip(res[pair.sut], res[pair.ref]):
        assert a == b
    st = http_post(pair.sut, "/v3/auth/status", {})
    assert st.get("enabled") is None and int(st["authRevision"]) > 1, st
