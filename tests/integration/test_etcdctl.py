"""Debian's etcdctl (v3) against the server under test AND a reference etcd.

Every command runs on both servers; stdout and exit code must match exactly
(stderr too when the command fails), after normalising only what is
inherently different between two clusters: cluster_id / member_id /
raft_term (JSON and `-w fields` outputs), endpoint addresses, lease IDs,
and the timestamp / client UUID in etcdctl's client-side warn log line.
Commands whose output is inherently server specific (endpoint status,
member list, endpoint health) are checked for shape and plausible values.

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_etcdctl.py
"""

import json
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import ETCD, Server, start_pair, _test_deadline  # noqa: E402,F401

HEADER_IDS = ("cluster_id", "member_id", "raft_term")
FIELDS_IDS = ("ClusterID", "MemberID", "RaftTerm")


class Pair:
    def __init__(self, sut, ref):
        self.sut = sut
        self.ref = ref
        # per-server substitutions -> placeholder: `subst` for whole words
        # in text (e.g. a lease ID in hex), `subst_int` for JSON integers
        # (e.g. the same lease ID in decimal)
        self.subst = {sut: {}, ref: {}}
        self.subst_int = {sut: {}, ref: {}}
        self.log = []

    def _subst_text(self, srv, text):
        for real, ph in sorted(self.subst[srv].items(), key=lambda kv: -len(kv[0])):
            text = re.sub(r"\b%s\b" % re.escape(real), ph, text)
        return text

    def _norm_obj(self, srv, obj):
        if isinstance(obj, dict):
            return {k: ("<%s>" % k if k in HEADER_IDS else self._norm_obj(srv, v))
                    for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._norm_obj(srv, x) for x in obj]
        if isinstance(obj, bool):
            return obj
        if isinstance(obj, int):
            return self.subst_int[srv].get(obj, obj)
        if isinstance(obj, str):
            return self._subst_text(srv, obj)
        return obj

    def _normalise(self, srv, text, stream):
        text = text.replace(srv.endpoint, "<endpoint>")
        lines = []
        for line in text.split("\n"):
            s = line.strip()
            if s.startswith("{") or s.startswith("["):
                try:
                    obj = json.loads(s)
                except ValueError:
                    obj = None
                if obj is not None:
                    if stream == "stderr" and isinstance(obj, dict) and "level" in obj:
                        # etcdctl's client-side zap log line: drop ts / target
                        obj = {k: obj.get(k) for k in ("level", "msg", "attempt", "error")}
                    lines.append(json.dumps(self._norm_obj(srv, obj), sort_keys=True))
                    continue
            line = self._subst_text(srv, line)
            m = re.match(r'^"(%s)" : (.*)$' % "|".join(FIELDS_IDS), line)
            if m:
                line = '"%s" : <%s>' % (m.group(1), m.group(1))
            lines.append(line)
        return "\n".join(lines)

    def _expand(self, srv, args, stdin):
        rev = {ph: real for real, ph in self.subst[srv].items()}

        def ex(s):
            for ph, real in rev.items():
                s = s.replace(ph, real)
            return s
        return [ex(a) for a in args], (ex(stdin) if stdin is not None else None)

    def raw(self, srv, *args, stdin=None):
        a, i = self._expand(srv, args, stdin)
        return srv.etcdctl(*a, stdin=i)

    def run(self, *args, stdin=None, compare_stderr=None):
        """Run on both, assert identical (normalised) results; return ref's."""
        res = {}
        for srv in (self.ref, self.sut):
            r = self.raw(srv, *args, stdin=stdin)
            res[srv] = (r.returncode,
                        self._normalise(srv, r.stdout, "stdout"),
                        self._normalise(srv, r.stderr, "stderr"), r)
        rc_r, out_r, err_r, raw_r = res[self.ref]
        rc_s, out_s, err_s, raw_s = res[self.sut]
        self.log.append((args, stdin, raw_r))
        desc = "etcdctl %s%s" % (" ".join(args), ("\n--- stdin:\n" + stdin) if stdin else "")
        assert (rc_s, out_s) == (rc_r, out_r), (
            "%s\n--- etcd rc=%d stdout:\n%s\n--- etcd stderr:\n%s\n"
            "--- server under test rc=%d stdout:\n%s\n--- stderr:\n%s" % (
                desc, rc_r, raw_r.stdout, raw_r.stderr, rc_s, raw_s.stdout, raw_s.stderr))
        if compare_stderr is None:
            compare_stderr = rc_r != 0
        if compare_stderr:
            assert err_s == err_r, "%s\n--- etcd stderr:\n%s\n--- server under test stderr:\n%s" % (
                desc, raw_r.stderr, raw_s.stderr)
        return raw_r

    def ok(self, *args, stdin=None):
        r = self.run(*args, stdin=stdin)
        assert r.returncode == 0, (args, r.stderr)
        return r

    def fail(self, *args, stdin=None):
        r = self.run(*args, stdin=stdin)
        assert r.returncode != 0, (args, r.stdout)
        return r


@pytest.fixture
def pair(request):
    sut, ref = start_pair(request)
    return Pair(sut, ref)


def _populate(p):
    # a small history with distinct create/mod revisions, versions, values
    p.ok("put", "foo", "3")
    p.ok("put", "foo/a", "zz")
    p.ok("put", "foo/b", "aa")
    p.ok("put", "fop", "m")
    p.ok("put", "foo/a", "bb")
    p.ok("put", "bar", "x")
    p.ok("put", "foo/c", "cc")
    p.ok("put", "foo/b", "ab")
    p.ok("put", "foo/b", "ac")
    p.ok("put", "zeta", "")


# ---------------------------------------------------------------------------

def test_put_and_get_basic(pair):
    p = pair
    p.ok("put", "a", "1")
    p.ok("put", "a", "2", "--prev-kv")
    p.ok("put", "b", "hello world", "--prev-kv")          # no prev: prints OK only
    p.ok("put", "a", "3", "--prev-kv", "-w", "json")
    p.ok("put", "c", "x", "-w", "json")
    p.ok("put", "c", "y", "-w", "fields")
    p.ok("put", "c", "z", "--prev-kv", "-w", "fields")
    p.ok("get", "a")
    p.ok("get", "a", "-w", "json")
    p.ok("get", "a", "-w", "fields")
    p.ok("get", "missing")
    p.ok("get", "missing", "-w", "json")
    p.ok("get", "a", "--print-value-only")
    p.ok("get", "b", "--hex")
    p.ok("get", "a", "c")                                   # range [a, c)
    p.ok("get", "a", "d", "-w", "json")
    p.ok("get", "a", "--consistency=s")
    # values with spaces, newlines, empty values, binary-ish bytes
    p.ok("put", "empty", "")
    p.ok("get", "empty", "-w", "json")
    p.ok("put", "nl", "line1\nline2")
    p.ok("get", "nl")
    p.ok("put", "--", "-dash", "v")
    p.ok("get", "--", "-dash")
    p.ok("put", "k\u00e9y", "v\u00e4l")
    p.ok("get", "k\u00e9y", "-w", "json")
    p.ok("get", "", "--from-key", "-w", "json")


def test_get_range_options(pair):
    p = pair
    _populate(p)
    for extra in ([], ["-w", "json"]):
        p.ok("get", "foo", "--prefix", *extra)
        p.ok("get", "foo/", "--prefix", *extra)
        p.ok("get", "foo", "--from-key", *extra)
        p.ok("get", "", "--from-key", *extra)
        p.ok("get", "foo", "--prefix", "--keys-only", *extra)
        p.ok("get", "foo", "--prefix", "--limit=2", *extra)
        p.ok("get", "foo", "--prefix", "--limit=100", *extra)
        p.ok("get", "foo", "--from-key", "--limit=1", *extra)
        if extra:
            p.fail("get", "f", "--prefix", "--print-value-only", *extra)
        else:
            p.ok("get", "f", "--prefix", "--print-value-only")
        p.ok("get", "foo", "fop", *extra)
        p.ok("get", "zzz", "--prefix", *extra)
        p.ok("get", "foo", "--prefix", "--keys-only", "--limit=1", *extra)
    p.ok("get", "foo", "--prefix", "--limit=2", "-w", "fields")
    p.ok("get", "", "--from-key", "--keys-only", "-w", "fields")


def test_get_sort(pair):
    p = pair
    _populate(p)
    for target, order in [(t, o) for t in ["KEY", "VERSION", "CREATE", "MODIFY", "VALUE"]
                          for o in ([], ["--order=ASCEND"], ["--order=DESCEND"])]:
        p.ok("get", "", "--from-key", "--sort-by=%s" % target, *order)
        p.ok("get", "foo", "--prefix", "--sort-by=%s" % target, *order, "-w", "json")
        p.ok("get", "foo", "--prefix", "--sort-by=%s" % target, *order, "--limit=2")
        p.ok("get", "foo", "--prefix", "--sort-by=%s" % target, *order, "--keys-only")
    p.ok("get", "foo", "--prefix", "--order=DESCEND")
    p.ok("get", "foo", "--prefix", "--order=DESCEND", "--limit=2", "-w", "json")


def test_get_rev(pair):
    p = pair
    _populate(p)
    for rev in range(1, 12):
        p.ok("get", "foo/b", "--rev=%d" % rev)
        p.ok("get", "foo", "--prefix", "--rev=%d" % rev, "-w", "json")
    p.ok("get", "", "--from-key", "--rev=5", "--sort-by=VALUE", "--order=DESCEND")
    p.ok("get", "foo", "--prefix", "--rev=6", "--keys-only", "-w", "json")
    p.ok("del", "foo/a")
    p.ok("get", "foo/a", "--rev=11", "-w", "json")
    p.ok("get", "foo/a", "--rev=12", "-w", "json")
    p.ok("put", "foo/a", "new")
    p.ok("get", "foo/a", "-w", "json")      # version restarts at 1, new create_revision


def test_get_future_rev_error(pair):
    p = pair
    _populate(p)
    r = p.fail("get", "foo", "--rev=1000")
    assert "Error: etcdserver: mvcc: required revision is a future revision" in r.stderr
    p.fail("get", "foo", "--prefix", "--rev=12")
    p.ok("get", "foo", "--prefix", "--rev=11")


def test_del(pair):
    p = pair
    _populate(p)
    p.ok("del", "fop")
    p.ok("del", "fop")                        # 0
    p.ok("del", "nope", "-w", "json")
    p.ok("del", "foo/a", "--prev-kv")
    p.ok("del", "foo/", "--prefix", "--prev-kv")
    p.ok("get", "", "--from-key")
    p.ok("put", "m1", "1")
    p.ok("put", "m2", "2")
    p.ok("del", "bar", "m2", "-w", "json")     # range [bar, m2)
    p.ok("get", "", "--from-key", "-w", "json")
    p.ok("del", "m", "--from-key", "--prev-kv", "-w", "json")
    p.ok("del", "", "--from-key")
    p.ok("get", "", "--from-key", "-w", "json")
    p.ok("del", "a", "--prefix", "-w", "fields")


TXN_CASES = [
    # (stdin, description)
    ('value("foo") = "3"\n\nput foo 4\nget foo\n\nput foo 5\n\n', "value = (true)"),
    ('value("foo") = "nope"\n\nput foo 4\n\nget foo\nput foo/x 1\ndel fop\n\n', "value = (false)"),
    ('value("foo/a") > "ba"\nvalue("foo/b") < "b"\n\nget foo --prefix\n\nput q 1\n\n', "value > <"),
    ('value("foo/c") != "cc"\n\nput a 1\n\nput b 1\n\n', "value !="),
    ('version("foo/b") = "3"\n\ndel foo/b --prev-kv\n\nput x y\n\n', "version ="),
    ('ver("foo/a") > "1"\nver("nokey") = "0"\n\nput v 1\n\n\n', "version > and missing key version 0"),
    ('version("foo/a") < "2"\n\n\nput vfail 1\n\n', "version < (false), empty success"),
    ('create("foo/a") = "3"\n\nput c1 1\n\nput c2 2\n\n', "create ="),
    ('c("nokey") = "0"\n\nput nokey created\n\nget nokey\n\n', "create = 0 on missing key"),
    ('create("foo") > "1"\n\nput c3 1\n\nput c4 1\n\n', "create > (false)"),
    ('mod("foo/b") = "10"\nm("foo/c") < "10"\n\nput m1 x\nget m --prefix\n\n\n', "mod = and <"),
    ('mod("foo") != "2"\n\n\nget foo\n\n', "mod != (false)"),
    ('mod("nokey2") > "0"\n\nput should not\n\nput should yes\nget should\n\n', "mod > on missing key"),
    ('value("foo") = "3"\nmod("foo") = "2"\nversion("foo") = "1"\ncreate("foo") = "2"\n\n'
     'put many1 a\nput many2 b --prev-kv\ndel foo/c --prev-kv\nget many --prefix\n\n\n', "all compares, mixed ops"),
    ('\nput nocmp 1\n\nput nope 1\n\n', "no compares -> success"),
    ('\n\n\n', "empty txn"),
    ('value("foo") = "3"\n\nget foo --rev=2\nget foo/ --prefix --keys-only\nget foo --prefix --limit=1\n'
     'get foo --prefix --sort-by=VALUE --order=DESCEND --limit=2\n\n\n', "gets with options"),
    ('value("foo") = "3"\n\ndel foo/ --prefix\nget foo --prefix\n\n\n', "delete prefix"),
]


def test_txn(pair):
    p = pair
    _populate(p)
    # the same cases three times over, state accumulating
    for extra in ([], ["-i"], ["-w", "json"]):
        for stdin, desc in TXN_CASES:
            p.ok("txn", *extra, stdin=stdin)
            p.ok("get", "", "--from-key", "-w", "json")


def test_txn_errors(pair):
    p = pair
    _populate(p)
    # duplicate key in one txn: server-side error
    r = p.fail("txn", stdin='\nput d 1\nput d 2\n\n\n')
    assert "duplicate key given in txn request" in r.stderr
    p.fail("txn", stdin='\nput d 1\ndel d\n\n\n')
    p.ok("txn", stdin='\nput d 1\nget d\n\n\n')
    # future revision inside a txn get
    p.fail("txn", stdin='\nget foo --rev=100\n\n\n')
    # client-side parse errors (same etcdctl, but exercises the exit path)
    p.fail("txn", stdin='bogus("x") = "1"\n\n\n')
    p.fail("txn", stdin='version("foo") = "x"\n\n\n')
    # nothing above may have changed state
    p.ok("get", "", "--from-key", "-w", "json")


def test_compaction(pair):
    p = pair
    _populate(p)
    p.ok("compaction", "3")
    r = p.fail("get", "foo", "--rev=2")
    assert "Error: etcdserver: mvcc: required revision has been compacted" in r.stderr
    p.ok("get", "foo", "--rev=3", "-w", "json")        # the compaction revision itself is readable
    p.ok("get", "foo", "--prefix", "--rev=4")
    r = p.fail("compaction", "3")                      # already compacted
    assert "required revision has been compacted" in r.stderr
    p.fail("compaction", "2")
    r = p.fail("compaction", "100")                    # future
    assert "required revision is a future revision" in r.stderr
    p.ok("compaction", "--physical", "6")
    p.fail("get", "foo/b", "--rev=5")
    p.ok("get", "foo/b", "--rev=6")
    p.ok("get", "", "--from-key", "--rev=7", "-w", "json")
    p.ok("put", "after", "compaction")
    p.ok("compaction", "12", "--physical")              # = current revision
    p.fail("get", "after", "--rev=11")
    p.ok("get", "", "--from-key", "-w", "json")
    p.fail("txn", stdin='\nget foo --rev=4\n\n\n')
    p.ok("txn", "-w", "json", stdin='mod("after") = "12"\n\nput z 1\n\n\n')


def test_empty_key_errors(pair):
    p = pair
    p.fail("put", "", "v")
    p.fail("get", "")
    p.fail("del", "")


def test_leases_via_etcdctl(pair):
    p = pair
    ids = {}
    for srv in (p.sut, p.ref):
        r = p.raw(srv, "lease", "grant", "300")
        assert r.returncode == 0, r.stderr
        m = re.match(r"^lease ([0-9a-f]{16}) granted with TTL\(300s\)\n$", r.stdout)
        assert m, r.stdout
        hexid = m.group(1)
        ids[srv] = hexid
        p.subst[srv][hexid] = "<LEASE>"
        p.subst_int[srv][int(hexid, 16)] = "<LEASEDEC>"
    p.ok("put", "lk", "v", "--lease=<LEASE>")
    p.ok("put", "lk2", "v2", "--lease=<LEASE>", "--prev-kv", "-w", "json")
    p.ok("get", "lk", "-w", "json")
    p.ok("put", "lk", "v9", "--ignore-lease", "-w", "json")
    p.ok("get", "lk", "-w", "json")
    p.ok("put", "lk", "--ignore-value", "-w", "json")
    p.ok("get", "lk", "-w", "json")
    p.ok("put", "lk", "--ignore-value", "--ignore-lease")
    p.ok("get", "", "--from-key", "-w", "json")
    p.ok("lease", "list")
    for srv in (p.sut, p.ref):
        r = p.raw(srv, "lease", "timetolive", "<LEASE>", "--keys")
        assert r.returncode == 0, r.stderr
        m = re.match(r"^lease [0-9a-f]+ granted with TTL\(300s\), remaining\((\d+)s\), attached keys\(\[(.*)\]\)\n$",
                     r.stdout)
        assert m, r.stdout
        assert 290 <= int(m.group(1)) <= 300
        # lk lost its lease with `put lk --ignore-value` (no --ignore-lease)
        assert sorted(m.group(2).split(" ")) == ["lk2"]
    p.ok("lease", "revoke", "<LEASE>")
    p.ok("get", "", "--from-key", "-w", "json")
    r = p.fail("lease", "revoke", "<LEASE>")
    assert "etcdserver: requested lease not found" in r.stderr
    p.fail("put", "lk3", "v", "--lease=<LEASE>")
    p.fail("put", "nolease", "--ignore-value")      # key does not exist


# --- server-specific outputs: shape checks ---------------------------------

def _shape_status(srv, st):
    assert st["Endpoint"] == srv.endpoint
    s = st["Status"]
    h = s["header"]
    assert h["cluster_id"] > 0 and h["member_id"] > 0 and h["raft_term"] >= 1
    assert h["revision"] >= 1
    assert re.match(r"^3\.\d+\.\d+", s["version"]), s["version"]
    assert s["dbSize"] > 0
    assert s["leader"] == h["member_id"]
    assert s["raftIndex"] >= 1 and s["raftTerm"] >= 1


def test_endpoint_status(pair):
    p = pair
    _populate(p)
    for srv in (p.sut, p.ref):
        r = p.raw(srv, "endpoint", "status", "-w", "json")
        assert r.returncode == 0, r.stderr
        js = json.loads(r.stdout)
        assert isinstance(js, list) and len(js) == 1
        _shape_status(srv, js[0])
        assert js[0]["Status"]["header"]["revision"] == 11
        r = p.raw(srv, "endpoint", "status")
        assert r.returncode == 0, r.stderr
        cols = [c.strip() for c in r.stdout.rstrip("\n").split(",")]
        # endpoint, id, version, db size, is leader, is learner, raft term,
        # raft index, raft applied index, errors
        assert len(cols) == 10, r.stdout
        assert cols[0] == srv.endpoint
        assert re.match(r"^[0-9a-f]{1,16}$", cols[1])
        assert int(cols[1], 16) == js[0]["Status"]["header"]["member_id"]
        assert re.match(r"^3\.\d+\.\d+", cols[2])
        assert re.match(r"^\d+(\.\d+)? (B|kB|MB)$", cols[3]), cols[3]
        assert cols[4] == "true" and cols[5] == "false"
        assert int(cols[6]) >= 1 and int(cols[7]) >= 1 and int(cols[8]) >= 1
        assert cols[9] == ""
        r = p.raw(srv, "endpoint", "status", "-w", "table")
        assert r.returncode == 0 and "ENDPOINT" in r.stdout and srv.endpoint in r.stdout


def test_endpoint_health(pair):
    p = pair
    for srv in (p.sut, p.ref):
        r = p.raw(srv, "endpoint", "health")
        assert r.returncode == 0, r.stderr
        assert r.stdout == ""
        assert re.match(r"^%s is healthy: successfully committed proposal: took = [0-9.]+(ns|µs|ms|s)\n$"
                        % re.escape(srv.endpoint), r.stderr), r.stderr
        r = p.raw(srv, "endpoint", "health", "-w", "json")
        assert r.returncode == 0, r.stderr
        js = json.loads(r.stdout)
        assert js[0]["endpoint"] == srv.endpoint and js[0]["health"] is True


def test_member_list(pair):
    p = pair
    for srv in (p.sut, p.ref):
        r = p.raw(srv, "member", "list", "-w", "json")
        assert r.returncode == 0, r.stderr
        js = json.loads(r.stdout)
        h = js["header"]
        assert h["cluster_id"] > 0 and h["member_id"] > 0
        ms = js["members"]
        assert len(ms) == 1
        m = ms[0]
        assert m["ID"] == h["member_id"]
        assert m["name"] == "default"
        assert m["peerURLs"] == [srv.peer_url]
        assert m["clientURLs"] == [srv.client_url]
        assert not m.get("isLearner", False)
        r = p.raw(srv, "member", "list")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "%x, started, default, %s, %s, false\n" % (m["ID"], srv.peer_url, srv.client_url)
        r = p.raw(srv, "member", "list", "-w", "table")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().split("\n")
        assert len(lines) == 5, r.stdout
        assert re.sub(r"\s+", " ", lines[1]) == "| ID | STATUS | NAME | PEER ADDRS | CLIENT ADDRS | IS LEARNER |"
        cells = [c.strip() for c in lines[3].strip("|").split("|")]
        assert cells == ["%x" % m["ID"], "started", "default", srv.peer_url, srv.client_url, "false"]
