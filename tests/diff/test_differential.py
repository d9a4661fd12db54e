"""Differential test: the same generated request sequence to real etcd and
to the server under test, over raw gRPC stubs; responses must match.

Responses are compared as protobuf messages after clearing
header.cluster_id / member_id / raft_term (at every nesting level); errors
are compared by gRPC status code and exact details text.

Knobs (environment):
  KETCH_DIFF_SEEDS   comma-separated seeds            (default "1,2")
  KETCH_DIFF_N       requests per seed                (default 5000)
  KETCH_DIFF_NO_LEASES=1    skip lease grants and lease fields (for
                     servers without the Lease service yet)
  KETCH_DIFF_STRICT_SORT=1  compare ties of non-KEY sorts exactly too
                     (etcd uses Go's unstable sort.Sort; see tie_canonical)
  KETCH_DIFF_CLUSTER_SEEDS / KETCH_DIFF_CLUSTER_N   the same against a
                     3-member cluster, requests spread over its members
                     (default "3" / 3000)

Run:  /usr/bin/python3 -m pytest -q tests/diff/test_differential.py
"""

import os
import random
import sys
import time

import grpc
import pytest
from google.protobuf import text_format

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import ETCD, Server, start_cluster, start_pair, _test_deadline  # noqa: E402,F401

from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402

SEEDS = [int(s) for s in os.environ.get("KETCH_DIFF_SEEDS", "1,2").split(",") if s.strip()]
N = int(os.environ.get("KETCH_DIFF_N", "5000"))
STRICT_SORT = bool(os.environ.get("KETCH_DIFF_STRICT_SORT"))
RPC_TIMEOUT = 10

KEYS = [b"a", b"a/", b"a/1", b"a/2", b"a/10", b"a/1/x", b"a/1/y", b"ab", b"abc",
        b"b", b"b/1", b"b/2", b"b/22", b"c", b"c/", b"c/x", b"d", b"d\x00", b"d\xff",
        b"e", b"foo", b"foo/bar", b"foo/baz", b"foo/bar/q", b"fop", b"z", b"zz",
        b"\x01", b"\xff", b"\xff\xff",
        # long keys: LMDB keys are at most 511 bytes; these share 600-byte prefixes
        b"long/" + b"x" * 600, b"long/" + b"x" * 600 + b"a", b"long/" + b"x" * 599 + b"y",
        b"long/" + b"x" * 10000]
VALUES = [b"", b"v", b"val1", b"val2", b"x" * 10, b"\x00bin\xff", b"zzz", b"A"]
LEASES = [0x10, 0x20, 0x7fffffffffff]   # granted on both servers up front
NO_LEASE = 0x999                         # never granted
USE_LEASES = not os.environ.get("KETCH_DIFF_NO_LEASES")

Compare = rpc_pb2.Compare
RangeRequest = rpc_pb2.RangeRequest


def prefix_end(k):
    """etcd's clientv3.GetPrefixRangeEnd."""
    b = bytearray(k)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xff:
            b[i] += 1
            return bytes(b[:i + 1])
    return b"\x00"


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.rev = 1           # current revision (from the reference)
        self.compact = 0       # last successful compaction revision

    def key(self, allow_empty=False):
        if allow_empty and self.r.random() < 0.01:
            return b""
        return self.r.choice(KEYS)

    def value(self):
        if self.r.random() < 0.003:
            return b"L" * self.r.choice([4096, 65536, 300000])
        if self.r.random() < 0.1:
            return bytes(self.r.getrandbits(8) for _ in range(self.r.randint(0, 20)))
        return self.r.choice(VALUES)

    def some_rev(self):
        r = self.r
        c = r.random()
        if c < 0.15:
            return self.compact
        if c < 0.25:
            return max(self.compact - 1, 0)
        if c < 0.35:
            return self.rev
        if c < 0.45:
            return self.rev + r.randint(1, 3)
        if c < 0.48:
            return -r.randint(1, 2)
        if c < 0.85:
            return r.randint(max(1, self.compact), max(1, self.rev))   # readable past
        return r.randint(1, self.rev + 1)

    def range_end(self, key):
        r = self.r
        c = r.random()
        if c < 0.45:
            return b""
        if c < 0.75:
            return prefix_end(key)
        if c < 0.85:
            return b"\x00"
        if c < 0.95:
            return self.r.choice(KEYS)
        return key

    # --- requests -------------------------------------------------------
    def put(self, in_txn=False):
        r = self.r
        req = rpc_pb2.PutRequest(key=self.key(allow_empty=True), value=self.value())
        if r.random() < 0.3:
            req.prev_kv = True
        c = r.random()
        if not USE_LEASES:
            pass
        elif c < 0.15:
            req.lease = r.choice(LEASES)
        elif c < 0.17:
            req.lease = NO_LEASE
        if in_txn:
            # etcd 3.4.23 PANICS (process exits) when an ignore_value /
            # ignore_lease put inside a txn meets a key deleted earlier in the
            # same txn ("unexpected error during txn: etcdserver: key not
            # found"), so never generate those inside txns.
            return req
        if r.random() < 0.06:
            req.ignore_value = True
            if r.random() < 0.7:
                req.value = b""
        if r.random() < 0.06:
            req.ignore_lease = True
            if r.random() < 0.7:
                req.lease = 0
        return req

    def delete(self):
        r = self.r
        k = self.key(allow_empty=True)
        req = rpc_pb2.DeleteRangeRequest(key=k, range_end=self.range_end(k) if k else b"")
        if r.random() < 0.5:
            req.prev_kv = True
        return req

    def range(self):
        r = self.r
        k = self.key(allow_empty=True)
        req = RangeRequest(key=k, range_end=self.range_end(k) if k else b"")
        if r.random() < 0.3:
            req.limit = r.choice([1, 2, 3, 5, 100, -1])
        if r.random() < 0.3:
            req.revision = self.some_rev()
        if r.random() < 0.4:
            req.sort_order = r.randint(0, 2)
        if r.random() < 0.4:
            req.sort_target = r.randint(0, 4)
        if r.random() < 0.1:
            req.serializable = True
        if r.random() < 0.15:
            req.keys_only = True
        if r.random() < 0.1:
            req.count_only = True
        for f in ("min_mod_revision", "max_mod_revision", "min_create_revision", "max_create_revision"):
            if r.random() < 0.07:
                setattr(req, f, r.randint(0, self.rev + 1))
        return req

    def compare(self):
        r = self.r
        k = self.key(allow_empty=True)     # empty compare key -> key is not provided
        cmp = Compare(key=k, result=r.randint(0, 3), target=r.randint(0, 4 if USE_LEASES else 3))
        if cmp.target == Compare.VERSION:
            cmp.version = r.randint(0, 4)
        elif cmp.target == Compare.CREATE:
            cmp.create_revision = r.randint(0, self.rev + 1)
        elif cmp.target == Compare.MOD:
            cmp.mod_revision = r.randint(0, self.rev + 1)
        elif cmp.target == Compare.VALUE:
            cmp.value = self.value()
        else:
            cmp.lease = r.choice(LEASES + [0, 0])
        if r.random() < 0.1:
            cmp.range_end = r.choice([prefix_end(k), b"\x00"])
        return cmp

    def op(self, depth):
        r = self.r
        c = r.random()
        if c < 0.4:
            return rpc_pb2.RequestOp(request_put=self.put(in_txn=True))
        if c < 0.6:
            return rpc_pb2.RequestOp(request_delete_range=self.delete())
        if c < 0.93 or depth >= 2:
            return rpc_pb2.RequestOp(request_range=self.range())
        return rpc_pb2.RequestOp(request_txn=self.txn(depth + 1))

    def txn(self, depth=0):
        r = self.r
        req = rpc_pb2.TxnRequest()
        for _ in range(r.choice([0, 1, 1, 1, 2, 2, 3])):
            req.compare.append(self.compare())
        for _ in range(r.choice([0, 1, 1, 2, 2, 3, 4])):
            req.success.append(self.op(depth))
        for _ in range(r.choice([0, 1, 1, 2, 3])):
            req.failure.append(self.op(depth))
        if depth == 0 and r.random() < 0.005:
            # nested txn over the op budget: the child gets maxTxnOps - opc(parent)
            inner = rpc_pb2.TxnRequest()
            for i in range(r.choice([60, 64, 65, 100])):
                inner.success.append(rpc_pb2.RequestOp(request_range=RangeRequest(key=self.key())))
            del req.failure[:]
            for i in range(r.choice([63, 64, 70])):
                req.failure.append(rpc_pb2.RequestOp(request_range=RangeRequest(key=self.key())))
            req.failure.append(rpc_pb2.RequestOp(request_txn=inner))
        if depth == 0 and r.random() < 0.01:
            # too many operations (limit 128)
            n = r.choice([128, 129, 200])
            del req.success[:]
            for i in range(n):
                req.success.append(rpc_pb2.RequestOp(request_range=RangeRequest(key=self.key())))
        return req

    def compaction(self):
        r = self.r
        c = r.random()
        if c < 0.1:
            rev = max(self.compact - r.randint(0, 1), 0)
        elif c < 0.2:
            rev = self.rev + r.randint(1, 2)
        else:
            lo = self.compact + 1
            hi = max(lo, self.rev - r.randint(0, 30))
            rev = r.randint(lo, hi) if hi >= lo else lo
        return rpc_pb2.CompactionRequest(revision=rev, physical=r.random() < 0.3)

    def next(self):
        c = self.r.random()
        if c < 0.30:
            return "Put", self.put()
        if c < 0.42:
            return "DeleteRange", self.delete()
        if c < 0.72:
            return "Range", self.range()
        if c < 0.997:
            return "Txn", self.txn()
        return "Compact", self.compaction()


# --- comparison ---------------------------------------------------------------

def scrub(msg):
    """Clear cluster_id/member_id/raft_term in every ResponseHeader, in place."""
    for fd, val in msg.ListFields():
        if fd.message_type is None:
            continue
        if fd.label == fd.LABEL_REPEATED:
            for v in val:
                scrub(v)
        elif fd.message_type.name == "ResponseHeader":
            val.cluster_id = 0
            val.member_id = 0
            val.raft_term = 0
        else:
            scrub(val)
    return msg


def _sort_value(kv, target):
    return {RangeRequest.KEY: kv.key, RangeRequest.VERSION: kv.version,
            RangeRequest.CREATE: kv.create_revision, RangeRequest.MOD: kv.mod_revision,
            RangeRequest.VALUE: kv.value}[target]


def tie_canonical(req, resp):
    """etcd sorts with Go's sort.Sort, which is not stable (pdqsort for more
    than 12 elements): keys whose sort target ties may come out in any
    (deterministic, but implementation-specific) order, and with a limit
    the tie at the cut decides which keys are returned.  Canonicalise: order
    each run of equal sort values by key; in the last run of a truncated
    response keep only the sort values."""
    if req.sort_target == RangeRequest.KEY or len(resp.kvs) < 2:
        return None
    kvs = list(resp.kvs)
    truncated = resp.more or (req.limit > 0 and resp.count > len(kvs))
    runs = []
    for kv in kvs:
        sv = _sort_value(kv, req.sort_target)
        if runs and runs[-1][0] == sv:
            runs[-1][1].append(kv.SerializeToString())
        else:
            runs.append((sv, [kv.SerializeToString()]))
    out = []
    for i, (sv, items) in enumerate(runs):
        if truncated and i == len(runs) - 1:
            out.append((sv, len(items)))
        else:
            out.append((sv, sorted(items)))
    return (resp.count, resp.more, resp.header.SerializeToString(), out)


def ranges_equivalent(req, a, b):
    ca, cb = tie_canonical(req, a), tie_canonical(req, b)
    return ca is not None and ca == cb


def txn_equivalent(req, a, b):
    """Txn responses equal up to tie order in their (nested) ranges."""
    if a.succeeded != b.succeeded or len(a.responses) != len(b.responses):
        return False
    if a.header != b.header:
        return False
    ops = req.success if a.succeeded else req.failure
    for op, ra, rb in zip(ops, a.responses, b.responses):
        if ra == rb:
            continue
        kind = op.WhichOneof("request")
        if kind == "request_range":
            if not ranges_equivalent(op.request_range, ra.response_range, rb.response_range):
                return False
        elif kind == "request_txn":
            if not txn_equivalent(op.request_txn, ra.response_txn, rb.response_txn):
                return False
        else:
            return False
    return True


def call(stub_fn, req):
    return stub_fn.future(req, timeout=RPC_TIMEOUT)


def outcome(fut):
    try:
        return ("ok", scrub(fut.result()))
    except grpc.RpcError as e:
        return ("err", e.code(), e.details())


def fmt(o):
    if o[0] == "ok":
        return text_format.MessageToString(o[1], as_utf8=False)
    return "gRPC error %s: %r" % (o[1], o[2])


class Target:
    def __init__(self, server):
        self.server = server
        self.channel = grpc.insecure_channel(server.endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)

    def fn(self, method):
        return getattr(self.kv, method)

    def close(self):
        self.channel.close()


class _Members:
    """Stands for the cluster in failure messages."""

    def __init__(self, members):
        self.members = members

    def log_tail(self, n=40):
        return "\n".join("--- %s:\n%s" % (m.name, m.log_tail(n // len(self.members) + 5))
                         for m in self.members)


class _RoundRobin:
    """A stub method whose calls go to the cluster's members in turn. A
    serializable read is local to its member, which may not have applied
    the previous write (made through another member) yet: a linearizable
    Range on that member first waits until it has."""

    def __init__(self, target, method):
        self.target = target
        self.method = method

    def future(self, req, timeout):
        t = self.target
        i = t.next % len(t.kvs)
        t.next += 1
        kv = t.kvs[i]
        if local_read(self.method, req):
            kv.Range(RangeRequest(key=b"\0diff-barrier", count_only=True), timeout=timeout)
        return getattr(kv, self.method).future(req, timeout=timeout)


def local_read(method, req):
    """Served from the member's own state, as etcd: a serializable Range, or
    a Txn whose every op is a serializable Range (etcd's isTxnSerializable)."""
    if method == "Range":
        return req.serializable
    if method == "Txn":
        return all(op.WhichOneof("request") == "request_range" and op.request_range.serializable
                   for op in list(req.success) + list(req.failure))
    return False


class ClusterTarget:
    def __init__(self, members):
        self.server = _Members(members)
        self.channels = [grpc.insecure_channel(m.endpoint) for m in members]
        self.kvs = [rpc_pb2_grpc.KVStub(ch) for ch in self.channels]
        # the lease grants go through the last member (a follower or not)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channels[-1])
        self.next = 0

    def fn(self, method):
        return _RoundRobin(self, method)

    def close(self):
        for ch in self.channels:
            ch.close()


@pytest.fixture
def servers(request):
    sut, ref = start_pair(request)
    ts = Target(sut), Target(ref)
    for t in ts:
        request.addfinalizer(t.close)
    return ts


@pytest.fixture
def cluster_servers(request):
    """A 3-member cluster of the server under test and one real etcd."""
    ref = Server(binary=ETCD, tmpfs=True, label="ref")
    request.addfinalizer(ref.cleanup)
    ref.start(wait=False)
    members = start_cluster(request, 3, label="sut")
    ref.wait_ready()
    ts = ClusterTarget(members), Target(ref)
    for t in ts:
        request.addfinalizer(t.close)
    return ts


@pytest.mark.parametrize("seed", SEEDS)
def test_differential(servers, seed):
    run_differential(servers, seed, N)


CLUSTER_SEEDS = [int(s) for s in os.environ.get("KETCH_DIFF_CLUSTER_SEEDS", "3").split(",")
                 if s.strip()]
CLUSTER_N = int(os.environ.get("KETCH_DIFF_CLUSTER_N", "3000"))


@pytest.mark.parametrize("seed", CLUSTER_SEEDS)
def test_differential_cluster(cluster_servers, seed):
    """The same against a 3-member cluster, each request to the next
    member in turn (writes through followers are forwarded; linearizable
    reads on followers confirm with the leader)."""
    run_differential(cluster_servers, seed, CLUSTER_N)


def run_differential(servers, seed, N):
    sut, ref = servers
    stats = {}
    errors = {}
    ties = 0

    # leases with fixed IDs on both servers
    for lid in (LEASES if USE_LEASES else []):
        req = rpc_pb2.LeaseGrantRequest(ID=lid, TTL=3600)
        a = outcome(call(ref.lease.LeaseGrant, req))
        b = outcome(call(sut.lease.LeaseGrant, req))
        assert a[0] == "ok", fmt(a)
        assert b[0] == "ok", "LeaseGrant(ID=%#x) failed on server under test: %s" % (lid, fmt(b))
        assert (a[1].ID, a[1].TTL, a[1].error) == (b[1].ID, b[1].TTL, b[1].error), (fmt(a), fmt(b))

    gen = Gen(seed)
    # the sequence starts after the lease grants (which do not bump the revision)
    t0 = time.monotonic()
    for i in range(N):
        method, req = gen.next()
        fa = call(ref.fn(method), req)
        fb = call(sut.fn(method), req)
        a, b = outcome(fa), outcome(fb)
        stats[(method, a[0])] = stats.get((method, a[0]), 0) + 1
        if a[0] == "err":
            errors[a[2]] = errors.get(a[2], 0) + 1
        if a[0] == "ok":
            gen.rev = a[1].header.revision or gen.rev
            if method == "Compact":
                gen.compact = req.revision
        if a == b:
            continue
        if a[0] == b[0] == "ok" and not STRICT_SORT:
            if method == "Range" and ranges_equivalent(req, a[1], b[1]):
                ties += 1
                continue
            if method == "Txn" and txn_equivalent(req, a[1], b[1]):
                ties += 1
                continue
        extra = ""
        if b[0] == "err" and b[1] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            extra = "\n--- server under test log (tail):\n%s" % sut.server.log_tail()
        pytest.fail(
            "seed %d: mismatch at request #%d (%s)\n--- request:\n%s\n--- etcd:\n%s\n"
            "--- server under test:\n%s%s" % (
                seed, i, method, text_format.MessageToString(req), fmt(a), fmt(b), extra),
            pytrace=False)
    # final sweep: the whole key space at every readable revision (and a few more)
    sweep = list(range(max(gen.compact - 2, 0), gen.rev + 3))
    sweep = sweep[-400:] + [gen.compact, gen.compact - 1, gen.rev + 1]
    for rev in sweep:
        for req in (RangeRequest(key=b"\x00", range_end=b"\x00", revision=rev),
                    RangeRequest(key=b"\x00", range_end=b"\x00", revision=rev, count_only=True,
                                 min_mod_revision=max(rev - 50, 0))):
            a = outcome(call(ref.fn("Range"), req))
            b = outcome(call(sut.fn("Range"), req))
            if a != b:
                pytest.fail("seed %d: final sweep mismatch at revision %d\n--- request:\n%s\n"
                            "--- etcd:\n%s\n--- server under test:\n%s" % (
                                seed, rev, text_format.MessageToString(req), fmt(a), fmt(b)),
                            pytrace=False)
    # request size limits (etcd: --max-request-bytes 1.5 MiB; gRPC limit + 512 KiB)
    for size in (1024 * 1024, 1600 * 1024, 2100 * 1024):
        req = rpc_pb2.PutRequest(key=b"big", value=b"B" * size)
        a = outcome(call(ref.fn("Put"), req))
        b = outcome(call(sut.fn("Put"), req))
        assert a == b, "Put of a %d-byte value\n--- etcd:\n%s\n--- server under test:\n%s" % (
            size, fmt(a)[:2000], fmt(b)[:2000])
    dt = time.monotonic() - t0
    summary = ", ".join("%s/%s=%d" % (m, k, n) for (m, k), n in sorted(stats.items()))
    print("\nseed %d: %d requests in %.1fs (%.0f req/s), final revision %d, compacted at %d, "
          "tie-order tolerances %d\n  %s\n  errors: %s" % (seed, N, dt, N / dt, gen.rev, gen.compact, ties,
                                                summary, errors))
    # the generator must actually exercise the interesting paths
    assert stats.get(("Compact", "ok"), 0) >= 1
    assert stats.get(("Put", "err"), 0) >= 1 and stats.get(("Txn", "err"), 0) >= 1
