"""ketchctl against Debian's etcdctl: the same commands, byte-identical
stdout and the same exit code, against the server under test AND real etcd.

Both clients run against the same server in the same state: for reads the
state is unchanged between the two runs; for writes each client gets its
own keys (or a fresh copy of the state), so the outputs match exactly.
Then the Kubernetes view (`ketchctl k8s ...`) on the seeded keyspace.

Run:  KETCH_BUILD=build-ctl KETCH_BIN=$PWD/build-ctl/ketch \
      /usr/bin/python3 -m pytest -q tests/integration/test_ketchctl.py
"""

import json
import os
import re
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import ETCDCTL, REPO, _test_deadline, ref_etcd, server  # noqa: E402,F401

BUILD = os.environ.get("KETCH_BUILD", "build")
KETCHCTL = os.path.join(REPO, BUILD, "ketchctl") if not os.path.isabs(BUILD) else os.path.join(BUILD, "ketchctl")

if not os.path.exists(KETCHCTL):
    pytest.skip("no ketchctl at %s" % KETCHCTL, allow_module_level=True)


def run(binary, endpoint, *args, stdin=None, env=None, timeout=20):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    e["ETCDCTL_API"] = "3"
    if env:
        e.update(env)
    cmd = [binary, "--endpoints=%s" % endpoint, "--command-timeout=5s", "--dial-timeout=3s"] + list(args)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=e, timeout=timeout)


def ctl(srv, *args, **kw):
    return run(KETCHCTL, srv.endpoint, *args, **kw)


def etcdctl(srv, *args, **kw):
    return run(ETCDCTL, srv.endpoint, *args, **kw)


def strip_warn(text):
    """etcdctl's client-side zap line has a timestamp and a random client id."""
    out = []
    for line in text.splitlines():
        if line.startswith("{\"level\":\"warn\""):
            obj = json.loads(line)
            out.append(json.dumps({k: obj.get(k) for k in ("level", "msg", "attempt", "error")}))
        else:
            out.append(line)
    return "\n".join(out)


def same(srv, *args, stdin=None, stderr=True, env=None):
    a = etcdctl(srv, *args, stdin=stdin, env=env)
    b = ctl(srv, *args, stdin=stdin, env=env)
    assert b.stdout == a.stdout, "stdout differs for %r:\netcdctl:\n%s\nketchctl:\n%s" % (args, a.stdout, b.stdout)
    assert b.returncode == a.returncode, "exit %d vs %d for %r (%s / %s)" % (
        a.returncode, b.returncode, args, a.stderr, b.stderr)
    if stderr and a.returncode != 0:
        assert strip_warn(b.stderr) == strip_warn(a.stderr), args
    return a


@pytest.fixture(params=["sut", "etcd"])
def srv(request):
    if request.param == "sut":
        return request.getfixturevalue("server")
    return request.getfixturevalue("ref_etcd")


def populate(srv):
    for k, v in [("foo", "bar"), ("foo2", "b\"az"), ("fop", "x"), ("a", "1"), ("b", "2"),
                 ("bin", "\u00e9t\u00e9\t\x01"), ("z", "zz")]:
        assert etcdctl(srv, "put", k, v).returncode == 0


READS = [
    ("get", "foo"),
    ("get", "foo", "--prefix"),
    ("get", "foo", "--prefix", "--keys-only"),
    ("get", "", "--prefix"),
    ("get", "a", "--from-key"),
    ("get", "a", "c"),
    ("get", "", "--prefix", "--limit=2"),
    ("get", "", "--prefix", "--sort-by=VALUE", "--order=DESCEND"),
    ("get", "", "--prefix", "--sort-by=MODIFY", "--order=ASCEND"),
    ("get", "", "--prefix", "--sort-by=create"),
    ("get", "foo", "--rev=2"),
    ("get", "foo", "--consistency=s"),
    ("get", "foo", "--print-value-only"),
    ("get", "bin", "--hex"),
    ("get", "nokey"),
]


@pytest.mark.parametrize("fmt", ["simple", "json", "fields", "table"])
def test_get_formats(srv, fmt):
    populate(srv)
    for args in READS:
        same(srv, *args, "-w", fmt)
        same(srv, "-w", fmt, *args)  # global flag before the command


def test_get_errors(srv):
    populate(srv)
    same(srv, "get")
    same(srv, "get", "a", "--prefix", "--from-key")
    same(srv, "get", "a", "b", "--prefix")
    same(srv, "get", "a", "--consistency=x")
    same(srv, "get", "a", "--order=sideways")
    same(srv, "get", "a", "--sort-by=color")
    same(srv, "get", "a", "-w", "bogus")
    same(srv, "get", "a", "-w", "json", "--print-value-only")
    same(srv, "get", "foo", "--rev=1000")   # future revision
    assert ctl(srv, "compaction", "3").returncode == 0
    same(srv, "get", "foo", "--rev=2")      # compacted


@pytest.mark.parametrize("fmt", ["simple", "json", "fields"])
def test_writes(srv, fmt):
    # each client writes its own keys, so revisions line up when run in turn
    def both(build):
        a = etcdctl(srv, *build("e"), "-w", fmt)
        b = ctl(srv, *build("k"), "-w", fmt)
        sa = re.sub(r"Revision\" : \d+|revision\":\d+", "R", a.stdout)
        sb = re.sub(r"Revision\" : \d+|revision\":\d+", "R", b.stdout)
        sa = sa.replace("ZTE=", "KEY").replace("e1", "K1")
        sb = sb.replace("azE=", "KEY").replace("k1", "K1")
        assert (sb, b.returncode) == (sa, a.returncode), (build("k"), a.stdout, b.stdout)
    both(lambda p: ("put", p + "1", "v1"))
    both(lambda p: ("put", p + "1", "v2", "--prev-kv"))
    both(lambda p: ("put", p + "1", "--ignore-value", "--prev-kv"))
    both(lambda p: ("del", p + "1", "--prev-kv"))
    both(lambda p: ("del", p + "nothing"))


def test_writes_exact(srv):
    """Run etcdctl, undo by deleting, run ketchctl: identical outputs."""
    same(srv, "put", "x", "1")
    r = etcdctl(srv, "put", "y", stdin="from stdin")
    assert r.stdout == "OK\n"
    assert ctl(srv, "put", "y2", stdin="from stdin").stdout == "OK\n"
    assert ctl(srv, "get", "y2", "--print-value-only").stdout == "from stdin\n"
    same(srv, "put", "y3", stdin="")
    same(srv, "put", "x", "1", "--lease=zz")
    same(srv, "put", "x", "1", "--lease=1234")
    same(srv, "put")
    same(srv, "del")
    same(srv, "del", "a", "--prefix", "--from-key")


TXNS = [
    'value("foo") = "bar"\nmod("foo") > "1"\n\nget foo\nget fo --prefix\n\nget z\n\n',
    'value("foo") = "nope"\n\nget foo\n\nget z --keys-only\nget a --from-key --limit=2\n\n',
    'version("foo") = "1"\ncreate("foo") != "0"\n\nget foo\n\n\n',
    '\n\n\n',
]


@pytest.mark.parametrize("fmt", ["simple", "json", "fields"])
def test_txn(srv, fmt):
    populate(srv)
    for t in TXNS:
        same(srv, "txn", "-w", fmt, stdin=t)
    same(srv, "txn", "-i", stdin=TXNS[0])


def test_txn_errors(srv):
    populate(srv)
    same(srv, "txn", stdin='value("foo") = "bar"\n\nget foo\n')   # EOF
    same(srv, "txn", stdin='bogus\n\n\n')
    same(srv, "txn", stdin='value("foo") = "bar"\n\nfrobnicate foo\n\n')
    same(srv, "txn", stdin='value("foo") = "bar"\n\nget --nope foo\n\n', stderr=False)  # cobra usage
    same(srv, "txn", stdin='\n\nput a 1\nput a 2\n\n')  # duplicate key
    same(srv, "txn", "extra")


def test_txn_writes(srv):
    a = etcdctl(srv, "txn", stdin='\nput t1 v\ndel t0\n\nput t2 v\n\n')
    b = ctl(srv, "txn", stdin='\nput t1 v\ndel t0\n\nput t2 v\n\n')
    assert (b.stdout, b.returncode) == (a.stdout, a.returncode) == ("SUCCESS\n\nOK\n\n0\n", 0)


def test_compaction(srv):
    populate(srv)
    same(srv, "compaction")
    same(srv, "compaction", "x")
    r = ctl(srv, "compaction", "3", "--physical")
    assert (r.stdout, r.returncode) == ("compacted revision 3\n", 0)
    same(srv, "compaction", "2")
    same(srv, "compaction", "100000")


def test_leases(srv):
    r = ctl(srv, "lease", "grant", "100")
    m = re.match(r"lease ([0-9a-f]{16}) granted with TTL\(100s\)\n$", r.stdout)
    assert m and r.returncode == 0, r.stdout
    lid = m.group(1)
    assert ctl(srv, "put", "lk", "v", "--lease=" + lid).returncode == 0
    for fmt in ("simple", "json", "fields"):
        same(srv, "lease", "list", "-w", fmt)
        a = etcdctl(srv, "lease", "timetolive", lid, "--keys", "-w", fmt)
        b = ctl(srv, "lease", "timetolive", lid, "--keys", "-w", fmt)
        norm = lambda s: re.sub(r"remaining\(\d+s\)|\"ttl\":\d+|\"TTL\" : \d+", "T", s)
        assert norm(b.stdout) == norm(a.stdout) and a.returncode == b.returncode
        same(srv, "lease", "keep-alive", "--once", lid, "-w", fmt)
    same(srv, "lease", "timetolive", "1234")
    same(srv, "lease", "revoke", "1234")
    same(srv, "lease", "grant", "abc")
    same(srv, "lease", "grant")
    same(srv, "lease", "grant", "5", "-w", "table")
    same(srv, "lease", "revoke", "xyz")
    r = ctl(srv, "lease", "revoke", lid)
    assert r.stdout == "lease %s revoked\n" % lid
    same(srv, "lease", "timetolive", lid)
    same(srv, "get", "lk")
    same(srv, "lease", "list")


@pytest.mark.parametrize("fmt", ["simple", "json", "fields", "table"])
def test_cluster_commands(srv, fmt):
    same(srv, "member", "list", "-w", fmt)
    same(srv, "alarm", "list", "-w", fmt, stderr=False)
    same(srv, "endpoint", "status", "-w", fmt) if fmt != "json" else None
    a = etcdctl(srv, "endpoint", "health", "-w", fmt)
    b = ctl(srv, "endpoint", "health", "-w", fmt)
    took = lambda s: re.sub(r"[0-9.]+[µnm]?s\b", "D", s)
    if fmt != "table":
        assert took(b.stdout) == took(a.stdout) and b.returncode == a.returncode


def test_endpoint_status_json(srv):
    a = json.loads(etcdctl(srv, "endpoint", "status", "-w", "json").stdout)
    b = json.loads(ctl(srv, "endpoint", "status", "-w", "json").stdout)
    for x in (a, b):
        for k in ("raftIndex", "raftAppliedIndex", "dbSize", "dbSizeInUse"):
            x[0]["Status"].pop(k, None)
        x[0]["Status"]["header"].pop("revision", None)
    assert a == b


def test_version_and_unknown(srv):
    same(srv, "version")
    r = ctl(srv, "nosuchcmd")
    assert r.returncode != 0 and 'unknown command "nosuchcmd"' in r.stderr


def test_env_and_endpoints(srv):
    e = {"ETCDCTL_ENDPOINTS": srv.endpoint, "ETCDCTL_WRITE_OUT": "json"}
    assert etcdctl(srv, "put", "envk", "v").returncode == 0
    a = subprocess.run([ETCDCTL, "get", "envk"], capture_output=True, text=True,
                       env=dict(os.environ, ETCDCTL_API="3", **e), timeout=20)
    b = subprocess.run([KETCHCTL, "get", "envk"], capture_output=True, text=True,
                       env=dict(os.environ, **e), timeout=20)
    assert a.stdout == b.stdout and a.stdout.startswith("{\"header\"")
    # flag beats environment
    b = subprocess.run([KETCHCTL, "get", "envk", "-w", "simple"], capture_output=True, text=True,
                       env=dict(os.environ, **e), timeout=20)
    assert b.stdout == "envk\nv\n"
    # failover: a dead endpoint first
    r = run(KETCHCTL, "127.0.0.1:1,%s" % srv.endpoint, "get", "envk")
    assert r.stdout == "envk\nv\n" and r.returncode == 0
    # nothing answers: etcdctl's timeout error and exit code
    r = run(KETCHCTL, "127.0.0.1:1", "get", "envk", "--command-timeout=1s")
    assert r.returncode == 1 and r.stderr.endswith("Error: context deadline exceeded\n")
    same(srv, "get", "x", "--cacert=/nonexistent")
    same(srv, "get", "x", "--cert=/nonexistent", "--key=/nonexistent")
    same(srv, "get", "x", "--cert=/nonexistent")


def test_watch(srv):
    for tool in (ETCDCTL, KETCHCTL):
        pass
    outs = []
    for binary in (ETCDCTL, KETCHCTL):
        env = dict(os.environ, ETCDCTL_API="3")
        p = subprocess.Popen([binary, "--endpoints=" + srv.endpoint, "watch", "w", "--prefix", "--prev-kv"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        import time
        time.sleep(0.7)
        etcdctl(srv, "put", "w1", "a")
        etcdctl(srv, "put", "w1", "b")
        etcdctl(srv, "del", "w1")
        time.sleep(0.5)
        p.terminate()
        out, _ = p.communicate(timeout=10)
        outs.append(out)
    assert outs[0] == "PUT\nw1\na\n" "PUT\nw1\na\nw1\nb\n" "DELETE\nw1\nb\nw1\n\n"
    assert outs[1] == outs[0]


def test_watch_rev_json(srv):
    etcdctl(srv, "put", "wk", "1")
    etcdctl(srv, "put", "wk", "2")
    outs = []
    for binary in (ETCDCTL, KETCHCTL):
        p = subprocess.Popen([binary, "--endpoints=" + srv.endpoint, "watch", "wk", "--rev=1", "-w", "json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, ETCDCTL_API="3"))
        import time
        time.sleep(1.0)
        p.terminate()
        out, _ = p.communicate(timeout=10)
        outs.append([{k: v for k, v in json.loads(l).items() if k != "Header"} for l in out.splitlines()])
    assert outs[1] == outs[0] and outs[0]


# ---------------------------------------------------------------------------
# Kubernetes view

def k8s(srv, *args):
    r = ctl(srv, "k8s", *args)
    return r


def rows(text):
    return [re.split(r"\s{3,}", l.strip()) for l in text.splitlines() if l.strip()]


@pytest.fixture
def seeded(server):
    r = k8s(server, "seed")
    assert r.returncode == 0 and r.stdout == "seeded 38 keys under /registry/\n", r.stdout + r.stderr
    return server


def test_k8s_ls(seeded):
    r = k8s(seeded, "ls")
    t = rows(r.stdout)
    assert t[0] == ["NAMESPACE", "RESOURCE", "NAME", "ENCODING", "SIZE"]
    got = {(x[0], x[1], x[2], x[3]) for x in t[1:]}
    for want in [
        ("-", "apiservices.apiregistration.k8s.io", "v1.apps", "json"),
        ("-", "clusterroles.rbac.authorization.k8s.io", "system:node", "protobuf"),
        ("kube-system", "roles.rbac.authorization.k8s.io", "extension-apiserver-authentication-reader", "protobuf"),
        ("kube-system", "rolebindings.rbac.authorization.k8s.io", "system:controller:bootstrap-signer", "protobuf"),
        ("default", "serviceaccounts", "default", "protobuf"),
        ("kube-system", "controllerrevisions.apps", "kube-proxy-5d8c7f9b4", "protobuf"),
        ("kube-system", "daemonsets.apps", "kube-proxy", "protobuf"),
        ("web", "deployments.apps", "frontend", "protobuf"),
        ("web", "replicasets.apps", "frontend-7c9f8d6b5", "protobuf"),
        ("web", "statefulsets.apps", "db", "protobuf"),
        ("-", "nodes", "node-1", "protobuf"),
        ("-", "namespaces", "kube-system", "protobuf"),
        ("web", "pods", "db-0", "protobuf"),
        ("-", "ranges", "serviceips", "protobuf"),
        ("-", "ranges", "servicenodeports", "protobuf"),
        ("web", "secrets", "tls-cert", "encrypted:aescbc-v1:key1"),
        ("default", "endpoints", "kubernetes", "protobuf"),
        ("default", "services", "kubernetes", "protobuf"),
        ("web", "events", "frontend-7c9f8d6b5-x2x7q.17a8b2c3d4e5f607", "protobuf"),
        ("kube-node-lease", "leases.coordination.k8s.io", "node-1", "protobuf"),
        ("web", "crontabs.stable.example.com", "my-crontab", "json"),
        ("-", "clusterissuers.cert-manager.io", "letsencrypt", "json"),
    ]:
        assert want in got, want
    assert len(t) == 39
    r = k8s(seeded, "ls", "pods", "-n", "web")
    assert [x[2] for x in rows(r.stdout)[1:]] == ["db-0", "frontend-7c9f8d6b5-x2x7q"]
    r = k8s(seeded, "ls", "pods", "-n", "nowhere")
    assert r.stdout == "" and "No resources found" in r.stderr


def test_k8s_summary(seeded):
    t = rows(k8s(seeded, "summary").stdout)
    d = {x[0]: (int(x[1]), int(x[2])) for x in t[1:]}
    assert d["pods"][0] == 3 and d["secrets"][0] == 3 and d["namespaces"][0] == 3
    assert d["deployments.apps"][0] == 2 and d["ranges"][0] == 2
    assert d["TOTAL"][0] == 38
    assert d["TOTAL"][1] == sum(v[1] for k, v in d.items() if k != "TOTAL")


def test_k8s_get(seeded):
    r = k8s(seeded, "get", "deployments", "coredns", "-n", "kube-system")
    assert r.returncode == 0
    assert "apiVersion: apps/v1\nkind: Deployment\n" in r.stdout
    assert '    1: "coredns"\n    3: "kube-system"\n' in r.stdout
    r = k8s(seeded, "get", "apiservices", "v1.apps")
    assert "encoding: json\n" in r.stdout
    body = r.stdout.split("encoding: json\n", 1)[1]
    assert json.loads(body)["kind"] == "APIService"
    r = k8s(seeded, "get", "secrets", "tls-cert", "-n", "web")
    assert "encoding: encrypted:aescbc-v1:key1\n" in r.stdout
    r = k8s(seeded, "get", "pods", "missing", "-n", "web")
    assert r.returncode == 1 and 'pods "missing" not found' in r.stderr


def _put_raw(srv, key, value):
    import grpc
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ch = srv.channel()
    rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=5)
    ch.close()


def test_k8s_edge_cases(server):
    # truncated protobuf: the envelope says 200 bytes of raw, 3 follow
    _put_raw(server, b"/registry/pods/ns1/trunc",
             b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x03Pod\x12\xc8\x01\x0a\x03abc")
    r = k8s(server, "get", "pods", "trunc", "-n", "ns1")
    assert r.returncode == 0 and "kind: Pod" in r.stdout and "truncated" in r.stdout
    # unknown kind and unknown resource
    _put_raw(server, b"/registry/widgets/ns1/w1",
             b"k8s\x00\x0a\x15\x0a\x0ewidgets.io/v9z\x12\x03Wid\x12\x04\x08\x01\x10\x02")
    r = k8s(server, "get", "widgets", "w1", "-n", "ns1")
    assert "apiVersion: widgets.io/v9z\nkind: Wid\n" in r.stdout and "  1: 1\n  2: 2\n" in r.stdout
    # every encryption provider is recognised
    for i, prefix in enumerate([b"k8s:enc:aesgcm:v1:k2:", b"k8s:enc:secretbox:v1:k3:",
                                b"k8s:enc:kms:v1:vault:", b"k8s:enc:kms:v2:vault2:"]):
        _put_raw(server, b"/registry/secrets/ns1/s%d" % i, prefix + b"\x00\x01\x02garbage")
    _put_raw(server, b"/registry/secrets/ns1/plain", b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret")
    r = k8s(server, "secrets", "--audit")
    t = rows(r.stdout)
    assert t[0] == ["NAMESPACE", "NAME", "STORED", "PROVIDER", "KEY"]
    assert ["ns1", "s0", "encrypted", "aesgcm-v1", "k2"] in t
    assert ["ns1", "s1", "encrypted", "secretbox-v1", "k3"] in t
    assert ["ns1", "s2", "encrypted", "kms-v1", "vault"] in t
    assert ["ns1", "s3", "encrypted", "kms-v2", "vault2"] in t
    assert ["ns1", "plain", "plain", "protobuf", "-"] in t
    assert "5 secrets: 1 plain, 4 encrypted" in r.stdout
