"""ketchctl's administrative commands, TLS, auth and failover against Debian's
etcdctl: the same commands, byte-identical stdout, the same exit code and
the same error line, against the server under test AND real etcd.

Commands that change state are run as self-cleaning sequences (create,
inspect, delete): the whole sequence runs with etcdctl, then with ketchctl,
against the same server, and the outputs are compared step by step.

Run:  KETCH_BUILD=build /usr/bin/python3 -m pytest -q tests/integration/test_ketchctl_admin.py
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import ETCD, ETCDCTL, REPO, Server, _test_deadline, ref_etcd, server  # noqa: E402,F401

BUILD = os.environ.get("KETCH_BUILD", "build")
KETCHCTL = os.path.join(REPO, BUILD, "ketchctl") if not os.path.isabs(BUILD) else os.path.join(BUILD, "ketchctl")

if not os.path.exists(KETCHCTL):
    pytest.skip("no ketchctl at %s" % KETCHCTL, allow_module_level=True)

# A port in this helper's range that nothing listens on (failover tests).
DEAD = "127.0.0.1:46999"


def run(binary, endpoint, *args, stdin=None, env=None, timeout=30):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    e["ETCDCTL_API"] = "3"
    if env:
        e.update(env)
    cmd = [binary]
    if endpoint:
        cmd.append("--endpoints=%s" % endpoint)
    cmd += ["--command-timeout=5s", "--dial-timeout=3s"] + list(args)
    return subprocess.run(cmd, input=stdin, capture_output=True, env=e, timeout=timeout)


def strip_warn(text):
    """clientv3's zap line has a timestamp, a random client id and a target."""
    out = []
    for line in text.decode("utf-8", "replace").splitlines():
        if line.startswith("{\"level\":\"warn\""):
            obj = json.loads(line)
            out.append(json.dumps({k: obj.get(k) for k in ("level", "msg", "attempt", "error")}))
        else:
            out.append(line)
    return "\n".join(out)


def result(r, norm=None):
    out = r.stdout
    err = strip_warn(r.stderr) if r.returncode else ""
    if err.startswith("panic:"):
        err = err.splitlines()[0]  # not Go's goroutine dump
    if norm:
        out = norm(out)
        err = norm(err.encode()).decode()
    return out, r.returncode, err


def same_seq(endpoint, seq, extra=(), env=None, norm=None):
    """Runs every command of seq with etcdctl, then every one with ketchctl."""
    got = {}
    for tool in (ETCDCTL, KETCHCTL):
        got[tool] = [result(run(tool, endpoint, *(list(extra) + list(args)), stdin=stdin, env=env), norm)
                     for args, stdin in seq]
    for (args, _), a, b in zip(seq, got[ETCDCTL], got[KETCHCTL]):
        assert b == a, "differs for %r:\netcdctl:  %r\nketchctl: %r" % (args, a, b)
    return got[ETCDCTL]


def same(endpoint, *args, extra=(), stdin=None, env=None):
    return same_seq(endpoint, [(args, stdin)], extra, env)[0]


@pytest.fixture(params=["sut", "etcd"])
def srv(request):
    if request.param == "sut":
        return request.getfixturevalue("server")
    return request.getfixturevalue("ref_etcd")


def enable_auth(srv):
    assert srv.etcdctl("user", "add", "root:rootpw").returncode == 0
    r = srv.etcdctl("auth", "enable")
    assert r.returncode == 0 and "Authentication Enabled" in r.stdout, r.stderr


ROOT = ("--user", "root:rootpw")
FORMATS = ["simple", "json", "fields", "table", "protobuf"]


# argument errors: the same in every output format, checked once (simple)
ARG_ERRORS = {("role", "grant-permission", "ra", "bogus", "k"),
              ("role", "grant-permission", "ra", "read", "k", "--prefix", "--from-key"),
              ("role", "grant-permission", "ra", "read", "k", "e", "--prefix"),
              ("user", "add", ":x"), ("user", "add"), ("role", "revoke-permission", "ra")}


def auth_sequence(fmt):
    w = ["-w", fmt]
    cmds = [
        ["role", "add", "ra"],
        ["role", "add", "ra"],  # already exists
        ["role", "grant-permission", "ra", "readwrite", "foo"],
        ["role", "grant-permission", "ra", "read", "pfx", "--prefix"],
        ["role", "grant-permission", "ra", "write", "fk", "--from-key"],
        ["role", "grant-permission", "ra", "read", "a", "b"],
        ["role", "grant-permission", "ra", "READ", "", "--prefix"],
        ["role", "grant-permission", "ra", "bogus", "k"],
        ["role", "grant-permission", "ra", "read", "k", "--prefix", "--from-key"],
        ["role", "grant-permission", "ra", "read", "k", "e", "--prefix"],
        ["role", "get", "ra"],
        ["role", "get", "nope"],
        ["role", "list"],
        ["user", "add", "ua:pw1"],
        ["user", "add", "ub", "--new-user-password=x"],
        ["user", "add", "uc", "--interactive=false"],
        ["user", "add", ":x"],
        ["user", "add"],
        ["user", "grant-role", "ua", "ra"],
        ["user", "grant-role", "ua", "nope"],
        ["user", "get", "ua"],
        ["user", "get", "ua", "--detail"],
        ["user", "get", "nope"],
        ["user", "list"],
        ["user", "revoke-role", "ua", "ra"],
        ["user", "revoke-role", "ua", "ra"],
        ["user", "passwd", "ua", "--interactive=false"],
        ["role", "revoke-permission", "ra", "foo"],
        ["role", "revoke-permission", "ra", "pfx", "--prefix"],
        ["role", "revoke-permission", "ra", "fk", "--from-key"],
        ["role", "revoke-permission", "ra", "a", "b"],
        ["role", "revoke-permission", "ra", "nokey"],
        ["role", "revoke-permission", "ra"],
        ["user", "delete", "ua"],
        ["user", "delete", "ub"],
        ["user", "delete", "uc"],
        ["user", "delete", "root"],
        ["role", "delete", "ra"],
        ["role", "delete", "ra"],
    ]
    if fmt != "simple":
        cmds = [c for c in cmds if tuple(c) not in ARG_ERRORS]
    return [(w + c, b"newpw\n") for c in cmds]


@pytest.mark.parametrize("fmt", FORMATS)
def test_user_role_commands(srv, fmt):
    enable_auth(srv)
    same_seq(srv.endpoint, auth_sequence(fmt), extra=ROOT)


def test_interactive_passwords(srv):
    enable_auth(srv)
    seq = [(["user", "add", "ui"], b""),                  # empty password
           (["user", "add", "ui"], b"a\nb\n"),            # confirmation differs
           (["user", "add", "ui"], b"a\na\n"),            # created
           (["user", "passwd", "ui"], b"c\nc\n"),
           (["user", "delete", "ui"], None)]
    same_seq(srv.endpoint, seq, extra=ROOT)


def test_auth_login(srv):
    enable_auth(srv)
    assert srv.etcdctl("--user", "root:rootpw", "put", "k", "v").returncode == 0
    same(srv.endpoint, "get", "k", extra=ROOT)
    same(srv.endpoint, "get", "k", extra=("--user", "root", "--password", "rootpw"))
    same(srv.endpoint, "get", "k", extra=("--user", "root:wrong"))
    same(srv.endpoint, "get", "k", extra=("--user", "nobody:x"))
    same(srv.endpoint, "get", "k")  # no user: permission / user name empty
    same(srv.endpoint, "get", "k", env={"ETCDCTL_USER": "root:rootpw"})
    same(srv.endpoint, "get", "k", extra=("--user", "root"), stdin=b"rootpw\n")  # the prompt
    same(srv.endpoint, "get", "k", "-w", "json", env={"ETCDCTL_USER": "root", "ETCDCTL_PASSWORD": "rootpw"})
    # a user limited by a role
    for c in (["role", "add", "rk"], ["role", "grant-permission", "rk", "read", "k"],
              ["user", "add", "lim:lp"], ["user", "grant-role", "lim", "rk"]):
        assert srv.etcdctl("--user", "root:rootpw", *c).returncode == 0
    same(srv.endpoint, "get", "k", extra=("--user", "lim:lp"))
    same(srv.endpoint, "put", "k", "w", extra=("--user", "lim:lp"))
    same(srv.endpoint, "auth", "disable", extra=("--user", "lim:lp"))
    same_seq(srv.endpoint, [(["auth", "disable"], None), (["auth", "enable"], None)], extra=ROOT)
    same(srv.endpoint, "auth", "enable", "x", extra=ROOT)


def test_auth_enable_creates_root_role(srv):
    # etcdctl's auth enable adds the root role when root lacks it
    for tool in (ETCDCTL, KETCHCTL):
        assert run(ETCDCTL, srv.endpoint, "user", "add", "root:pw").returncode == 0
        r = run(tool, srv.endpoint, "auth", "enable")
        assert r.returncode == 0 and r.stdout == b"Authentication Enabled\n", r.stderr
        r = run(tool, srv.endpoint, "--user", "root:pw", "auth", "disable")
        assert r.returncode == 0 and r.stdout == b"Authentication Disabled\n", r.stderr
        assert run(ETCDCTL, srv.endpoint, "user", "delete", "root").returncode == 0
        assert run(ETCDCTL, srv.endpoint, "role", "delete", "root").returncode == 0


def test_auth_status(server):
    # etcdctl 3.4 has no `auth status` (3.5 does): checked against the API
    r = run(KETCHCTL, server.endpoint, "auth", "status")
    assert r.returncode == 0 and r.stdout.startswith(b"Authentication Status: false\nAuthRevision: ")
    enable_auth(server)
    r = run(KETCHCTL, server.endpoint, "--user", "root:rootpw", "auth", "status", "-w", "json")
    j = json.loads(r.stdout)
    assert j["enabled"] is True and j["authRevision"] > 0 and "header" in j


def _hex_ids(text):
    return set(re.findall(rb"\b[0-9a-f]{16}\b", text))


def test_member_commands(srv):
    errors = [["member", "add"], ["member", "add", "a", "b"], ["member", "add", "n"],
              ["member", "add", "n", "--peer-urls=bad"], ["member", "add", "n", "--peer-urls=,"],
              ["member", "remove"],
              ["member", "remove", "zz"], ["member", "remove", "1234"], ["member", "update"],
              ["member", "update", "12"], ["member", "update", "zz", "--peer-urls=http://a:1"],
              ["member", "update", "12", "--peer-urls=http://a:1"], ["member", "promote"],
              ["member", "promote", "12"],
              ["member", "add", "n", "--peer-urls=%s" % srv.peer_url]]
    same_seq(srv.endpoint, [(c, None) for c in errors])
    port = 46900
    for fmt in FORMATS:
        outs = {}
        for tool in (ETCDCTL, KETCHCTL):
            # a new peer URL each time: a removed member's ID may not come back
            port += 1
            peer = "http://127.0.0.1:%d" % port
            w = ["-w", fmt]
            add = run(tool, srv.endpoint, *(w + ["member", "add", "n2", "--learner", "--peer-urls=" + peer]))
            lst = run(ETCDCTL, srv.endpoint, "member", "list").stdout
            mid = [l.split(b",")[0] for l in lst.splitlines() if b"unstarted" in l]
            assert len(mid) == 1, (lst, add.stderr)
            mid = mid[0].decode()
            steps = [add,
                     run(tool, srv.endpoint, *(w + ["member", "update", mid, "--peer-urls=" + peer])),
                     run(tool, srv.endpoint, *(w + ["member", "promote", mid])),  # not in sync
                     run(tool, srv.endpoint, *(w + ["member", "remove", mid]))]
            norm = lambda b: b.replace(mid.encode(), b"NEWID").replace(  # noqa: E731
                mid.encode().lstrip(b"0"), b"NEWID").replace(peer.encode(), b"PEER")
            outs[tool] = []
            for r in steps:
                o, rc, e = result(r)
                if fmt in ("simple", "json", "fields", "table"):
                    # %16x pads an ID with a leading zero nibble with a space
                    o = re.sub(rb" +NEWID", b" NEWID", norm(o))
                    # the members' order (by ID) depends on the random new ID
                    o = re.sub(rb'ETCD_INITIAL_CLUSTER="([^"]*)"',
                               lambda m: b'ETCD_INITIAL_CLUSTER="%s"' % b",".join(
                                   sorted(m.group(1).split(b","))), o)
                    o = re.sub(rb'"ID":\d+', b'"ID":N', o)
                    o = re.sub(rb'"members":\[.*\]', b'"members":M', o)
                else:
                    o = len(o)  # protobuf: the IDs are varints of random length
                outs[tool].append((o, rc, e))
        for a, b in zip(outs[ETCDCTL], outs[KETCHCTL]):
            if fmt == "protobuf":
                assert a[1:] == b[1:] and abs(a[0] - b[0]) <= 4
            else:
                assert a == b, fmt


def test_maintenance_commands(srv):
    srv.etcdctl("put", "a", "1")
    seq = []
    for fmt in FORMATS:
        w = ["-w", fmt]
        seq += [(w + ["endpoint", "hashkv"], None), (w + ["endpoint", "hashkv", "--cluster"], None),
                (w + ["endpoint", "hashkv", "--rev=2"], None),
                (w + ["defrag"], None), (w + ["defrag", "--cluster"], None),
                (w + ["move-leader", "12"], None), (w + ["move-leader"], None),
                (w + ["move-leader", "zz"], None), (w + ["alarm", "disarm"], None),
                (w + ["alarm", "disarm", "x"], None)]
    norm = lambda b: re.sub(rb'"dbSize(InUse)?":\d+|\d+ kB|"DBSize" : \d+', b"SIZE", b)  # noqa: E731
    same_seq(srv.endpoint, seq, norm=norm)


def test_endpoint_health_cluster(srv):
    for fmt in ("json", "fields", "table"):
        a = run(ETCDCTL, srv.endpoint, "endpoint", "health", "--cluster", "-w", fmt)
        b = run(KETCHCTL, srv.endpoint, "endpoint", "health", "--cluster", "-w", fmt)
        took = lambda t: re.sub(rb"[ +-]+", b" ", re.sub(rb"\d+(\.\d+)?(m|\xc2\xb5|n)?s", b"T", t))  # noqa: E731
        assert (took(b.stdout), b.returncode) == (took(a.stdout), a.returncode)


def test_lock_with_command(srv):
    script = 'echo "$1 ${ETCD_LOCK_KEY%/*} ${#ETCD_LOCK_KEY}"; test -n "$ETCD_LOCK_REV"; exit $2'
    for code in ("0", "3"):
        same(srv.endpoint, "lock", "lk", "--", "sh", "-c", script, "sh", "held", code)
    same(srv.endpoint, "lock", "lk", "--", "sh", "-c", "kill -9 $$")
    same(srv.endpoint, "lock", "lk", "no-such-command-here")
    same(srv.endpoint, "lock")
    # unlocked afterwards: the lock prefix is empty
    assert srv.etcdctl("get", "lk", "--prefix").stdout == ""


def _spawn(tool, srv, *args):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    e["ETCDCTL_API"] = "3"
    return subprocess.Popen([tool, "--endpoints=" + srv.endpoint] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=e)


def wait_until(cond, timeout=20, what=None):
    """Polls cond (a state the test then relies on; never a timing check)."""
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, "condition not reached%s" % (": %r" % what() if what else "")
        time.sleep(0.05)


def _read_lines(p, n):
    lines = []
    for _ in range(n):
        lines.append(p.stdout.readline())
    return lines


def _interrupt(p):
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    return p.returncode, out, err


def test_lock_held_until_interrupt(srv):
    for tool in (ETCDCTL, KETCHCTL):
        p = _spawn(tool, srv, "lock", "held")
        key, _ = _read_lines(p, 2)  # the key and its (empty) value, as `get`
        assert re.match(rb"held/[0-9a-f]+\n$", key), (tool, key)
        # a second locker waits behind the first
        q = _spawn(tool, srv, "lock", "held")
        wait_until(lambda: srv.etcdctl("get", "held", "--prefix", "--keys-only").stdout.count("held/") == 2)
        rc, _, err = _interrupt(p)
        assert rc == 0, (tool, err)
        key2, _ = _read_lines(q, 2)
        assert key2 != key and key2.startswith(b"held/")
        rc, _, _ = _interrupt(q)
        assert rc == 0
        assert srv.etcdctl("get", "held", "--prefix").stdout == ""


def test_elect(srv):
    same(srv.endpoint, "elect")
    same(srv.endpoint, "elect", "x")
    same(srv.endpoint, "elect", "x", "y", "-l")
    outs = {}
    for tool in (ETCDCTL, KETCHCTL):
        leader = _spawn(tool, srv, "elect", "el", "first")
        k1 = _read_lines(leader, 2)
        observer = _spawn(tool, srv, "elect", "el", "-l")
        o1 = _read_lines(observer, 2)
        second = _spawn(tool, srv, "elect", "el", "second")
        time.sleep(0.5)  # not asserted on: the second campaigner waits
        rc1, _, _ = _interrupt(leader)  # resigns: the second one leads
        k2 = _read_lines(second, 2)
        o2 = _read_lines(observer, 2)
        rc2, _, _ = _interrupt(second)
        rc3, _, _ = _interrupt(observer)
        lease = lambda ls: [re.sub(rb"[0-9a-f]{16}|[0-9a-f]+\n", b"L", l) for l in ls]  # noqa: E731
        outs[tool] = (lease(k1), lease(o1), lease(k2), lease(o2), rc1, rc2, rc3)
        assert k1[1] == b"first\n" and k2[1] == b"second\n" and o2[1] == b"second\n"
    assert outs[KETCHCTL] == outs[ETCDCTL]


def test_lease_keepalive_once(srv):
    r = run(ETCDCTL, srv.endpoint, "lease", "grant", "100")
    lid = r.stdout.split()[1].decode()
    for fmt in ("simple", "json", "fields", "protobuf"):
        a = run(ETCDCTL, srv.endpoint, "lease", "keep-alive", "--once", lid, "-w", fmt)
        b = run(KETCHCTL, srv.endpoint, "lease", "keep-alive", "--once", lid, "-w", fmt)
        assert (b.stdout, b.returncode) == (a.stdout, a.returncode), fmt


def test_protobuf_output(srv):
    srv.etcdctl("put", "foo", "b%dr")  # the protobuf printer goes through Printf
    seq = [(["get", "foo", "-w", "protobuf"], None), (["get", "nokey", "-w", "protobuf"], None),
           (["member", "list", "-w", "protobuf"], None), (["alarm", "list", "-w", "protobuf"], None),
           (["lease", "list", "-w", "protobuf"], None),
           (["txn", "-w", "protobuf"], b'value("foo") = "b%dr"\n\nget foo\n\nget nokey\n\n'),
           (["del", "nokey", "-w", "protobuf"], None)]
    same_seq(srv.endpoint, seq)
    # watch: the history from revision 2, then stopped
    outs = []
    for tool in (ETCDCTL, KETCHCTL):
        r = subprocess.run(["timeout", "2", tool, "--endpoints=" + srv.endpoint, "watch", "foo", "--rev=2",
                            "-w", "protobuf"], capture_output=True, env=dict(os.environ, ETCDCTL_API="3"))
        outs.append(r.stdout)
    assert outs[0] == outs[1] and b"foo" in outs[0]


# ---- failover ----

def test_failover_first_endpoint_down(srv):
    srv.etcdctl("put", "fk", "fv")
    eps = "%s,%s" % (DEAD, srv.endpoint)
    for args in (["get", "fk"], ["get", "fk", "-w", "json"], ["member", "list"], ["put", "fk", "fv2"],
                 ["del", "nokey"], ["lease", "list"], ["user", "list"]):
        a = run(ETCDCTL, eps, *args)
        b = run(KETCHCTL, eps, *args)
        assert (b.stdout, b.returncode) == (a.stdout, a.returncode), args
    # the environment names the endpoints too
    r = run(KETCHCTL, None, "get", "fk", env={"ETCDCTL_ENDPOINTS": eps})
    assert r.stdout == b"fk\nfv2\n" and r.returncode == 0
    # every endpoint down: etcdctl's error and exit code
    a = run(ETCDCTL, DEAD, "get", "fk", "--command-timeout=1s")
    b = run(KETCHCTL, DEAD, "get", "fk", "--command-timeout=1s")
    assert b.returncode == a.returncode and b.stderr.endswith(b"Error: context deadline exceeded\n")


# ---- TLS ----

def sh(cwd, *cmd):
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    sh(d, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
       "-out", name + ".pem", "-days", "30", "-subj", "/CN=" + name)


def make_cert(d, ca, name, ext, cn):
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    sh(d, "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
       "-out", name + ".csr", "-subj", "/CN=" + cn)
    sh(d, "openssl", "x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
       "-CAcreateserial", "-out", name + ".pem", "-days", "30", "-extfile", name + ".ext")


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="ketch-test-ctlcerts-")
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_cert(d, "ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
              "extendedKeyUsage=serverAuth,clientAuth\n", "server")
    make_cert(d, "ca", "client", "extendedKeyUsage=clientAuth\n", "client")
    make_cert(d, "ca", "root", "extendedKeyUsage=clientAuth\n", "root")
    p = lambda n: os.path.join(d, n)  # noqa: E731
    yield p
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=["sut", "etcd"])
def tls_srv(request, certs):
    args = ["--cert-file", certs("server.pem"), "--key-file", certs("server.key"),
            "--trusted-ca-file", certs("ca.pem"), "--client-cert-auth"]
    s = Server(binary=None if request.param == "sut" else ETCD, tmpfs=request.param == "etcd",
               scheme="https", extra_args=args, label="tls-" + request.param,
               tls_client=(certs("ca.pem"), certs("client.pem"), certs("client.key")))
    request.addfinalizer(s.cleanup)
    s.start()
    return s


def test_tls_client_certificates(tls_srv, certs):
    url = "https://127.0.0.1:%d" % tls_srv.client_port
    tls = ("--cacert", certs("ca.pem"), "--cert", certs("client.pem"), "--key", certs("client.key"))
    for tool in (ETCDCTL, KETCHCTL):
        r = run(tool, url, "put", "tk", "tv", *tls)
        assert (r.stdout, r.returncode) == (b"OK\n", 0), r.stderr
    seq = [(["get", "tk"], None), (["get", "tk", "-w", "json"], None),
           (["member", "list", "-w", "table"], None), (["del", "nokey"], None)]
    same_seq(url, seq, extra=tls)
    # the bare host:port endpoint with TLS flags also speaks TLS
    same_seq(tls_srv.endpoint, seq, extra=tls)
    # ETCDCTL_* variables for the TLS flags
    env = {"ETCDCTL_CACERT": certs("ca.pem"), "ETCDCTL_CERT": certs("client.pem"),
           "ETCDCTL_KEY": certs("client.key")}
    same_seq(url, seq, env=env)
    # the server's certificate is not checked
    same(url, "put", "tk2", "v", extra=("--insecure-skip-tls-verify", "--cert", certs("client.pem"),
                                        "--key", certs("client.key")))
    # files that are missing or do not pair
    same(url, "get", "tk", extra=("--cacert", "/nonexistent"))
    same(url, "get", "tk", extra=("--cert", certs("client.pem")))
    same(url, "get", "tk", extra=("--cacert", certs("ca.pem"), "--cert", "/nonexistent", "--key", "/x"))


def test_tls_unusable_files(certs, tmp_path):
    """Files that exist but cannot serve: etcdctl's (Go's) words for each,
    said before any connection is tried."""
    def f(name, *parts):
        p = tmp_path / name
        p.write_text("".join(open(certs(x)).read() if x.endswith((".pem", ".key")) else x
                             for x in parts))
        return str(p)
    garbage, both = f("garbage", "not PEM\n"), f("both.pem", "client.pem", "client.key")
    key_as_cert, cert_as_key = certs("client.key"), certs("client.pem")
    crl = f("crl.pem", "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n")
    cases = [
        ("--cert", garbage, "--key", certs("client.key")),
        ("--cert", certs("client.pem"), "--key", garbage),
        ("--cert", certs("client.pem"), "--key", certs("server.key")),  # another key
        ("--cert", key_as_cert, "--key", certs("client.key")),
        ("--cert", certs("client.pem"), "--key", cert_as_key),
        ("--cert", crl, "--key", certs("client.key")),
        ("--cert", certs("client.pem"), "--key", crl),
        ("--cacert", certs("ca.key")),
        ("--cacert", both),
        ("--cacert", str(tmp_path)),
        ("--cacert", garbage, "--cert", certs("client.pem"), "--key", garbage),  # key first
    ]
    for extra in cases:
        r = same("127.0.0.1:1", "get", "k", extra=extra)
        assert r[1] == 128 and r[2].startswith("Error: ") and "deadline" not in r[2], (extra, r)


def test_tls_refusals(tls_srv, certs):
    url = "https://127.0.0.1:%d" % tls_srv.client_port
    # a server signed by a CA the client does not trust; no client certificate
    for extra in (("--cacert", certs("otherca.pem"), "--cert", certs("client.pem"), "--key", certs("client.key")),
                  ("--cacert", certs("ca.pem"))):
        a = run(ETCDCTL, url, "get", "k", "--command-timeout=2s", *extra)
        b = run(KETCHCTL, url, "get", "k", "--command-timeout=2s", *extra)
        assert a.returncode != 0 and b.returncode != 0 and b.stdout == a.stdout == b""
    # plaintext to a TLS port
    b = run(KETCHCTL, "http://127.0.0.1:%d" % tls_srv.client_port, "get", "k", "--command-timeout=2s")
    assert b.returncode != 0


def test_tls_with_auth(certs, request):
    """TLS and a password together; failover from a dead endpoint."""
    args = ["--cert-file", certs("server.pem"), "--key-file", certs("server.key"),
            "--trusted-ca-file", certs("ca.pem")]
    s = Server(scheme="https", extra_args=args, label="tls-auth",
               tls_client=(certs("ca.pem"), None, None))
    request.addfinalizer(s.cleanup)
    s.start()
    url = "https://127.0.0.1:%d" % s.client_port
    ca = ("--cacert", certs("ca.pem"))
    assert run(ETCDCTL, url, "user", "add", "root:pw", *ca).returncode == 0
    assert run(ETCDCTL, url, "auth", "enable", *ca).returncode == 0
    assert run(KETCHCTL, url, "put", "k", "v", "--user", "root:pw", *ca).stdout == b"OK\n"
    seq = [(["get", "k", "-w", "fields"], None), (["user", "list"], None), (["role", "list"], None)]
    same_seq(url, seq, extra=ca + ("--user", "root:pw"))
    same_seq("https://%s,%s" % (DEAD, url), seq, extra=ca + ("--user", "root:pw"))
    same(url, "get", "k", extra=ca + ("--user", "root:bad"))


# ---- make-mirror ----

@pytest.mark.parametrize("direction", ["etcd-to-sut", "sut-to-etcd"])
def test_make_mirror(server, ref_etcd, direction):
    src, dst = (ref_etcd, server) if direction == "etcd-to-sut" else (server, ref_etcd)
    results = {}
    for tool, tag in ((ETCDCTL, "e"), (KETCHCTL, "k")):
        pfx = "/%s/" % tag
        for k, v in (("a", "1"), ("b", "2"), ("gone", "x")):
            assert src.etcdctl("put", pfx + k, v).returncode == 0
        src.etcdctl("put", "/outside", "no")
        p = _spawn(tool, src, "make-mirror", "--prefix=" + pfx, "--dest-prefix=/copy" + pfx, dst.endpoint)
        try:
            def dest(): return dst.etcdctl("get", "/copy" + pfx, "--prefix").stdout
            wait_until(lambda: dest().count("/copy") == 3, what=dest)
            # then the updates: a put, a delete, a txn of two puts
            src.etcdctl("put", pfx + "c", "3")
            src.etcdctl("del", pfx + "gone")
            assert src.etcdctl("txn", stdin="\nput %sd 4\nput %sb 22\n\n\n" % (pfx, pfx)).returncode == 0
            wait_until(lambda: "22" in dest() and "gone" not in dest(), what=dest)
            results[tag] = dest().replace(pfx, "/P/")
        finally:
            p.kill()
            p.wait()
    assert results["k"] == results["e"] == "/copy/P/a\n1\n/copy/P/b\n22\n/copy/P/c\n3\n/copy/P/d\n4\n"
    assert dst.etcdctl("get", "/outside").stdout == ""
    same(src.endpoint, "make-mirror")
    same(src.endpoint, "make-mirror", "--dest-prefix=x", "--no-dest-prefix", dst.endpoint)


def test_watch_interactive(srv):
    for k, v in (("wa", "1"), ("wb", "2"), ("xa", "3")):
        srv.etcdctl("put", k, v)
    outs = {}
    for tool in (ETCDCTL, KETCHCTL):
        e = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        e["ETCDCTL_API"] = "3"
        p = subprocess.Popen([tool, "--endpoints=" + srv.endpoint, "watch", "-i"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
        p.stdin.write(b"watch wa --rev=2\n")
        p.stdin.flush()
        lines = _read_lines(p, 3)  # the history from --rev: PUT wa 1
        p.stdin.write(b"watch w --prefix --prev-kv --rev 2\nbogus\n\nwatch\n")
        p.stdin.flush()
        lines += _read_lines(p, 6)  # PUT wa 1, PUT wb 2
        out, err = p.communicate(input=b"", timeout=20)  # end of input ends it
        outs[tool] = (lines, out, p.returncode, err)
    assert outs[KETCHCTL] == outs[ETCDCTL]
    assert outs[ETCDCTL][2] == 3


def test_check_perf(srv):
    same(srv.endpoint, "check", "perf", "--load=zz")
    srv.etcdctl("put", "/busy/x", "1")
    same(srv.endpoint, "check", "perf", "--prefix=/busy/")
    # a short run (KETCHCTL_CHECK_SECONDS; etcdctl always takes 60 s): the
    # verdict lines as etcdctl's; whether they say PASS is the machine's
    # business, not asserted
    r = run(KETCHCTL, srv.endpoint, "check", "perf", "--auto-compact", env={"KETCHCTL_CHECK_SECONDS": "2"})
    lines = r.stdout.decode().splitlines()
    assert re.match(r"Compacting with revision \d+$", lines[0]) and lines[1].startswith("Compacted with")
    assert re.match(r"(PASS: Throughput is|FAIL: Throughput too low:) \d+ writes/s$", lines[2]), lines
    assert re.match(r"(PASS: Slowest request took|Slowest request took too long:) \d+\.\d{6}s$", lines[3])
    assert re.match(r"(PASS: Stddev is|Stddev too high:) \d+\.\d{6}s$", lines[4])
    assert lines[5] in ("PASS", "FAIL") and r.returncode == (0 if lines[5] == "PASS" else 1)
    assert srv.etcdctl("get", "/etcdctl-check-perf/", "--prefix", "--keys-only").stdout == ""


def test_check_datascale(srv):
    same(srv.endpoint, "check", "datascale", "--load=zz")
    srv.etcdctl("put", "/etcdctl-check-datascale/x", "1")
    same(srv.endpoint, "check", "datascale")
    srv.etcdctl("del", "/etcdctl-check-datascale/x")
    r = run(KETCHCTL, srv.endpoint, "check", "datascale", env={"KETCHCTL_CHECK_KEYS": "300"})
    if b"could not find" in r.stdout:
        # no such metric on this server: etcdctl's FAIL lines, exit 1
        assert r.stdout == (b"could not find: process_resident_memory_bytes\nFAIL: Could not read "
                            b"process_resident_memory_bytes before the put operations.\n")
        assert r.returncode == 1
    else:
        lines = r.stdout.decode().splitlines()
        assert lines[0] == ("Start data scale check for work load [10000 key-value pairs, 1024 bytes "
                            "per key-value, 50 concurrent clients].")
        assert re.match(r"PASS: Approximate system memory used : -?\d+\.\d\d MB\.$", lines[-1]), lines
        assert r.returncode == 0
    assert srv.etcdctl("get", "/etcdctl-check-datascale/", "--prefix", "--keys-only").stdout == ""


@pytest.mark.parametrize("binary", ["sut", "etcd"])
def test_reauth_after_token_expiry(request, binary):
    """A token that expires while a command waits (simple tokens live
    --auth-token-ttl seconds after their last use): the next call gets
    `etcdserver: invalid auth token`, and the client logs in again."""
    s = Server(binary=None if binary == "sut" else ETCD, tmpfs=binary == "etcd",
               extra_args=["--auth-token-ttl", "1"], label="ttl-" + binary)
    request.addfinalizer(s.cleanup)
    s.start()
    enable_auth(s)
    for tool in (ETCDCTL, KETCHCTL):
        p = subprocess.Popen([tool, "--endpoints=" + s.endpoint, "--user", "root:rootpw", "lock", "ttl"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict({k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")},
                                      ETCDCTL_API="3"))
        key = p.stdout.readline()
        assert key.startswith(b"ttl/"), p.stderr.read()
        time.sleep(2.5)  # let the token expire (what is tested is the unlock below)
        rc, _, err = _interrupt(p)
        assert rc == 0, (tool, err)
        assert s.etcdctl("--user", "root:rootpw", "get", "ttl", "--prefix").stdout == "", tool


@pytest.mark.parametrize("binary", ["sut", "etcd"])
def test_cluster_move_leader(request, binary):
    from harness import start_cluster
    ms = start_cluster(request, n=3, binary=None if binary == "sut" else ETCD, tmpfs=binary == "etcd",
                       label="mv-" + binary)
    eps = ",".join(m.endpoint for m in ms)

    def status():
        r = run(ETCDCTL, eps, "endpoint", "status", "-w", "json")
        return json.loads(r.stdout)

    def leader():
        ids = {s["Status"]["leader"] for s in status()}
        return ids.pop() if len(ids) == 1 else None

    # every member has published its client URLs (etcd's and ketch's
    # members do that a moment after they start)
    # (as seen by every member: each applies the publications on its own)
    wait_until(lambda: all(all(m.get("clientURLs") for m in json.loads(
        run(ETCDCTL, m_.endpoint, "member", "list", "-w", "json").stdout)["members"]) for m_ in ms))
    same(eps, "member", "list", "-w", "table")
    for tool in (ETCDCTL, KETCHCTL):
        wait_until(lambda: leader() is not None)
        lead = leader()
        target = [s["Status"]["header"]["member_id"] for s in status()
                  if s["Status"]["header"]["member_id"] != lead][0]
        r = run(tool, eps, "move-leader", "%x" % target)
        assert r.returncode == 0, (tool, r.stderr)
        assert r.stdout == b"Leadership transferred from %x to %x\n" % (lead, target), r.stdout
        wait_until(lambda: leader() == target)
    # to a member that does not exist
    same(eps, "move-leader", "1234")
    # failover in a cluster: the first member stopped
    assert run(ETCDCTL, eps, "put", "fo", "1").returncode == 0
    ms[0].stop()
    same(eps, "get", "fo")
    same(eps, "member", "list")
    for tool in (ETCDCTL, KETCHCTL):
        r = run(tool, eps, "endpoint", "health", "--command-timeout=2s")
        lines = sorted(re.sub(r"took = \S+", "took = T", l) for l in r.stderr.decode().splitlines()
                       if not l.startswith('{"level"'))
        if tool == ETCDCTL:
            want = (lines, r.returncode)
        else:
            assert (lines, r.returncode) == want
