"""etcdserverpb.Watch against the server under test, with real etcd as the
reference: raw gRPC streams (python grpc + python3-etcd3's generated
stubs), Debian's etcdctl, python3-etcd3's watch API, a differential run
(one generated history, many watchers, compared response by response with
etcd after clearing cluster_id/member_id/raft_term), and a scale smoke test.

Run:  KETCH_BIN=$PWD/build/ketch /usr/bin/python3 -m pytest -q tests/integration/test_watch.py
"""

import os
import queue
import random
import subprocess
import sys
import threading
import time

import grpc
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from harness import ETCD, ETCDCTL, Server, server, ref_etcd, _test_deadline  # noqa: E402,F401

import etcd3  # noqa: E402


def _load_protos():
    """python3-etcd3's stubs predate watch_id, fragment and progress
    requests: compile our proto/ copies with protoc, under renamed packages
    so they do not clash with etcd3's in protobuf's default pool (the wire
    format only depends on field numbers)."""
    import importlib
    import re
    import tempfile
    src = os.path.join(HERE, "..", "..", "proto")
    out = tempfile.mkdtemp(prefix="ketch-watch-pb-")
    for name in ("rpc", "kv", "auth"):
        text = open(os.path.join(src, name + ".proto")).read()
        text = re.sub(r"\b(etcdserverpb|mvccpb|authpb)\b", r"kt\1", text)
        text = re.sub(r'import "(kv|auth)\.proto"', r'import "kt\1.proto"', text)
        open(os.path.join(out, "kt%s.proto" % name), "w").write(text)
    subprocess.run(["protoc", "-I", out, "--python_out", out] +
                   ["kt%s.proto" % n for n in ("rpc", "kv", "auth")], check=True, cwd=out)
    sys.path.insert(0, out)
    return importlib.import_module("ktrpc_pb2")


rpc_pb2 = _load_protos()


class _Stubs:
    def __init__(self, channel, service, methods):
        for name, (req, resp, stream) in methods.items():
            path = "/etcdserverpb.%s/%s" % (service, name)
            mk = channel.stream_stream if stream else channel.unary_unary
            setattr(self, name, mk(path, request_serializer=req.SerializeToString,
                                   response_deserializer=resp.FromString))


class rpc_pb2_grpc:  # noqa: N801  (stands in for the generated module)
    @staticmethod
    def KVStub(ch):
        p = rpc_pb2
        return _Stubs(ch, "KV", {
            "Range": (p.RangeRequest, p.RangeResponse, False),
            "Put": (p.PutRequest, p.PutResponse, False),
            "DeleteRange": (p.DeleteRangeRequest, p.DeleteRangeResponse, False),
            "Txn": (p.TxnRequest, p.TxnResponse, False),
            "Compact": (p.CompactionRequest, p.CompactionResponse, False)})

    @staticmethod
    def WatchStub(ch):
        return _Stubs(ch, "Watch", {"Watch": (rpc_pb2.WatchRequest, rpc_pb2.WatchResponse, True)})


# ---------------------------------------------------------------------------
# a raw watch stream

class WatchStream:
    def __init__(self, channel):
        self.q = queue.Queue()
        self.resps = queue.Queue()
        self.call = rpc_pb2_grpc.WatchStub(channel).Watch(self._reqs())
        self.t = threading.Thread(target=self._pump, daemon=True)
        self.t.start()

    def _reqs(self):
        while True:
            r = self.q.get()
            if r is None:
                return
            yield r

    def _pump(self):
        try:
            for r in self.call:
                self.resps.put(r)
        except grpc.RpcError as e:
            self.resps.put(e)

    def create(self, key, **kw):
        self.q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, **kw)))

    def cancel(self, wid):
        self.q.put(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=wid)))

    def progress(self):
        self.q.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def get(self, timeout=5):
        r = self.resps.get(timeout=timeout)
        if isinstance(r, Exception):
            raise r
        return r

    def drain(self, quiet=0.6, limit=30):
        """Every response until none came for `quiet` seconds."""
        out = []
        end = time.time() + limit
        while time.time() < end:
            try:
                out.append(self.get(timeout=quiet))
            except queue.Empty:
                break
        return out

    def close(self):
        self.call.cancel()
        self.q.put(None)


def norm(resp):
    r = rpc_pb2.WatchResponse()
    r.CopyFrom(resp)
    r.header.cluster_id = 0
    r.header.member_id = 0
    r.header.raft_term = 0
    return r


def short(resps):
    return [str(norm(r)) for r in resps]


class Both:
    """The server under test and real etcd, driven the same way."""

    def __init__(self, sut, ref):
        self.srvs = (sut, ref)
        self.chans = [s.channel() for s in self.srvs]
        self.kv = [rpc_pb2_grpc.KVStub(c) for c in self.chans]

    def put(self, k, v):
        for kv in self.kv:
            kv.Put(rpc_pb2.PutRequest(key=k, value=v))

    def delete(self, k, end=b""):
        for kv in self.kv:
            kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=k, range_end=end))

    def txn(self, ops):
        for kv in self.kv:
            reqs = []
            for op in ops:
                if op[0] == "put":
                    reqs.append(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=op[1], value=op[2])))
                else:
                    reqs.append(rpc_pb2.RequestOp(
                        request_delete_range=rpc_pb2.DeleteRangeRequest(key=op[1], range_end=op[2])))
            kv.Txn(rpc_pb2.TxnRequest(success=reqs))

    def compact(self, rev):
        for kv in self.kv:
            kv.Compact(rpc_pb2.CompactionRequest(revision=rev, physical=True))

    def rev(self):
        revs = [kv.Range(rpc_pb2.RangeRequest(key=b"x")).header.revision for kv in self.kv]
        assert revs[0] == revs[1]
        return revs[0]

    def streams(self):
        return [WatchStream(c) for c in self.chans]

    def close(self):
        for c in self.chans:
            c.close()


@pytest.fixture
def both(server, ref_etcd):
    b = Both(server, ref_etcd)
    yield b
    b.close()


def gen_history(b, seed, n):
    rnd = random.Random(seed)
    keys = [("%s/%d" % (p, i)).encode() for p in ("a", "b", "c") for i in range(5)]
    for i in range(n):
        x = rnd.random()
        k = rnd.choice(keys)
        if x < 0.55:
            b.put(k, ("v%d" % i).encode())
        elif x < 0.7:
            b.delete(k)
        elif x < 0.78:
            p = k[:2]
            b.delete(p, p[:-1] + bytes([p[-1] + 1]))
        else:
            ks = rnd.sample(keys, 3)
            b.txn([("put", ks[0], b"t%d" % i), ("del", ks[1], b""), ("put", ks[2], b"u%d" % i)])


# ---------------------------------------------------------------------------
# differential

WATCHERS = [
    dict(key=b"a/1"),
    dict(key=b"a/1", start_revision=1),
    dict(key=b"a/", range_end=b"a0", start_revision=2, prev_kv=True),
    dict(key=b"b/", range_end=b"b0", start_revision=20, filters=[rpc_pb2.WatchCreateRequest.NOPUT]),
    dict(key=b"b/", range_end=b"b0", start_revision=5, filters=[rpc_pb2.WatchCreateRequest.NODELETE],
         prev_kv=True),
    dict(key=b"b/3", range_end=b"\0", start_revision=10),
    dict(key=b"\0", range_end=b"\0", start_revision=1),
    dict(key=b"", range_end=b"\0", start_revision=40, prev_kv=True),
    dict(key=b"a/0", range_end=b"a/3", start_revision=33),
    dict(key=b"c/2", start_revision=60, prev_kv=True),
    dict(key=b"c/", range_end=b"c0"),
    dict(key=b"zz", start_revision=1000),
]


def run_watchers(b, watchers, one_stream=False, live=None, compact_before=None, quiet=0.6):
    sut_streams, ref_streams = [], []
    for i, w in enumerate(watchers):
        if one_stream and i > 0:
            ss, rs = sut_streams[0], ref_streams[0]
        else:
            ss, rs = b.streams()
            sut_streams.append(ss)
            ref_streams.append(rs)
        kw = dict(w)
        if one_stream:
            kw["watch_id"] = 100 + i
        ss.create(**kw)
        rs.create(**kw)
    # `quiet`: the catch-up must be complete before live() writes, or the
    # header revisions depend on timing (the machine may be busy).
    got_s = [s.drain(quiet=quiet) for s in sut_streams]
    got_r = [s.drain(quiet=quiet) for s in ref_streams]
    if live:
        live()
        got_s = [g + s.drain(quiet=quiet) for g, s in zip(got_s, sut_streams)]
        got_r = [g + s.drain(quiet=quiet) for g, s in zip(got_r, ref_streams)]
    for s in sut_streams + ref_streams:
        s.close()
    return got_s, got_r


def by_watch(resps):
    out = {}
    for r in resps:
        out.setdefault(r.watch_id, []).append(str(norm(r)))
    return out


def test_differential_history(both):
    gen_history(both, 7, 120)
    rev = both.rev()
    assert rev > 70

    def live():
        gen_history(both, 8, 25)
    got_s, got_r = run_watchers(both, WATCHERS, live=live)
    for i, (s, r) in enumerate(zip(got_s, got_r)):
        assert short(s) == short(r), "watcher %d %r" % (i, WATCHERS[i])
    # something was actually seen
    assert sum(len(r.events) for g in got_s for r in g) > 100


def test_differential_one_stream(both):
    gen_history(both, 11, 80)

    def live():
        gen_history(both, 12, 20)
    got_s, got_r = run_watchers(both, WATCHERS, one_stream=True, live=live)
    assert by_watch(got_s[0]) == by_watch(got_r[0])


def test_differential_compacted(both):
    gen_history(both, 3, 60)
    both.compact(30)
    ws = [dict(key=b"a/", range_end=b"a0", start_revision=5),           # compacted
          dict(key=b"a/", range_end=b"a0", start_revision=29, prev_kv=True),  # compacted
          dict(key=b"a/", range_end=b"a0", start_revision=30, prev_kv=True),
          dict(key=b"\0", range_end=b"\0", start_revision=31, prev_kv=True)]

    def live():
        gen_history(both, 4, 10)
    got_s, got_r = run_watchers(both, ws, live=live)
    for i, (s, r) in enumerate(zip(got_s, got_r)):
        assert short(s) == short(r), "watcher %d %r" % (i, ws[i])
    assert got_s[0][-1].compact_revision == 30 and got_s[0][-1].canceled


def test_differential_control(both):
    """Server-chosen and client-chosen IDs, duplicates, empty ranges,
    cancels (known and unknown IDs)."""
    both.put(b"k", b"1")
    out = []
    for st in both.streams():
        st.create(key=b"k")                       # 0
        st.create(key=b"k", watch_id=1)           # 1
        st.create(key=b"k")                       # 2
        st.create(key=b"k", watch_id=1)           # duplicate
        st.create(key=b"b", range_end=b"a")       # empty range
        st.create(key=b"b", range_end=b"b")       # empty range
        st.create(key=b"k", watch_id=7)
        st.create(key=b"k")                       # 3
        st.cancel(1)
        st.cancel(42)
        got = st.drain()
        out.append(got)
        st.close()
    assert short(out[0]) == short(out[1])


def test_differential_fragment(request):
    args = ["--max-request-bytes", "20000"]
    sut = Server(label="sut", extra_args=args)
    ref = Server(binary=ETCD, tmpfs=True, label="ref", extra_args=args)
    for s in (sut, ref):
        request.addfinalizer(s.cleanup)
        s.start()
    b = Both(sut, ref)
    try:
        # the catch-up response (120 revisions, ~720 KB) is fragmented: etcd
        # splits at --max-request-bytes + 512 KiB
        ops = [("put", ("f/%03d" % i).encode(), b"x" * 6000) for i in range(120)]
        for op in ops:
            b.txn([op])
        ws = [dict(key=b"f/", range_end=b"f0", start_revision=1, fragment=True),
              dict(key=b"f/", range_end=b"f0", start_revision=1)]

        def live():
            b.txn(ops[:3])
        got_s, got_r = run_watchers(b, ws, live=live, quiet=2.0)
        for i, (s, r) in enumerate(zip(got_s, got_r)):
            assert short(s) == short(r), "watcher %d" % i
        assert any(r.fragment for r in got_s[0])
    finally:
        b.close()


def test_progress_request(server):
    ch = server.channel()
    kv = rpc_pb2_grpc.KVStub(ch)
    kv.Put(rpc_pb2.PutRequest(key=b"p", value=b"1"))
    st = WatchStream(ch)
    st.create(key=b"p")
    assert st.get().created
    st.progress()
    r = st.get()
    assert r.watch_id == -1 and not r.events and r.header.revision == 2
    # an unsynced watcher defers the answer until it has caught up
    st.create(key=b"p", start_revision=1)
    st.progress()
    got = st.drain()
    assert got[0].created
    assert [len(r.events) for r in got[1:]] == [1, 0]
    assert got[-1].watch_id == -1 and got[-1].header.revision == 2
    st.close()
    ch.close()


def test_progress_notify_interval(request):
    args = ["--experimental-watch-progress-notify-interval", "500ms"]
    sut = Server(label="sut", extra_args=args)
    request.addfinalizer(sut.cleanup)
    sut.start()
    ch = sut.channel()
    st = WatchStream(ch)
    st.create(key=b"q", progress_notify=True)
    st.create(key=b"r")
    # Progress arrives every 500 ms, so the stream is never quiet: collect
    # for a fixed 2.2 s instead.
    got = st.drain(quiet=1.6, limit=2.2)
    assert [r.created for r in got[:2]] == [True, True]
    prog = got[2:]
    assert len(prog) >= 2
    assert all(r.watch_id == 0 and not r.events and r.header.revision == 1 for r in prog)
    st.close()
    ch.close()


# ---------------------------------------------------------------------------
# etcdctl

def etcdctl_watch(srv, args, actions, settle=1.0, after=1.0):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    p = subprocess.Popen([ETCDCTL, "--endpoints=%s" % srv.endpoint, "watch"] + args,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(settle)
        actions(srv)
        time.sleep(after)
    finally:
        p.terminate()
        out, err = p.communicate(timeout=10)
    return out


def test_etcdctl_watch(server, ref_etcd):
    def history(s):
        for args in (["put", "foo", "1"], ["put", "foo", "2"], ["del", "foo"], ["put", "fox", "x"]):
            assert s.etcdctl(*args).returncode == 0

    def live(s):
        for args in (["put", "foo", "3"], ["put", "fop", "y"], ["del", "f", "--prefix"],
                     ["put", "g", "z"]):
            assert s.etcdctl(*args).returncode == 0
    outs = {}
    for s in (server, ref_etcd):
        history(s)
        outs[s] = [etcdctl_watch(s, args, live) for args in
                   (["foo"], ["--rev", "1", "foo"], ["--prefix", "--prev-kv", "f"],
                    ["--rev", "2", "--prefix", "--prev-kv", "f"], ["-w", "json", "--rev", "3", "fo", "fp"])]
    for a, b in zip(outs[server], outs[ref_etcd]):
        # json headers carry the members' IDs
        import re
        norm_ = lambda t: re.sub(r'"(cluster_id|member_id|raft_term)":\d+', '"\\1":0', t)
        assert norm_(a) == norm_(b)
    assert "PUT\nfoo\n3\n" in outs[server][0]


# ---------------------------------------------------------------------------
# python3-etcd3

def test_python_etcd3(server):
    host, port = server.endpoint.split(":")
    c = etcd3.client(host=host, port=int(port))
    events, cancel = c.watch(b"w1")
    c.put(b"w1", b"a")
    c.delete(b"w1")
    it = iter(events)
    e1 = next(it)
    e2 = next(it)
    assert isinstance(e1, etcd3.events.PutEvent) and e1.value == b"a"
    assert isinstance(e2, etcd3.events.DeleteEvent) and e2.key == b"w1"
    cancel()

    events, cancel = c.watch_prefix(b"pre/", start_revision=1)
    c.put(b"pre/x", b"1")
    e = next(iter(events))
    assert e.key == b"pre/x" and e.value == b"1"
    cancel()

    got = []
    done = threading.Event()

    def cb(resp):
        got.extend(resp.events)
        done.set()
    wid = c.add_watch_callback(b"cb", cb)
    c.put(b"cb", b"v")
    assert done.wait(5)
    assert got[0].value == b"v"
    c.cancel_watch(wid)
    c.close()


# ---------------------------------------------------------------------------
# scale

def test_many_watchers(server):
    n_streams, per = 20, 100
    ch = [server.channel() for _ in range(4)]
    streams = [WatchStream(ch[i % 4]) for i in range(n_streams)]
    t0 = time.time()
    for st in streams:
        for _ in range(per):
            st.create(key=b"s/", range_end=b"s0")
    for st in streams:
        for _ in range(per):
            assert st.get(timeout=10).created
    rpc_pb2_grpc.KVStub(ch[0]).Put(rpc_pb2.PutRequest(key=b"s/1", value=b"v"))
    seen = 0
    for st in streams:
        ids = set()
        for _ in range(per):
            r = st.get(timeout=10)
            assert len(r.events) == 1 and r.events[0].kv.key == b"s/1"
            ids.add(r.watch_id)
        assert len(ids) == per
        seen += len(ids)
    assert seen == n_streams * per
    assert time.time() - t0 < 10
    for st in streams:
        st.close()
    for c in ch:
        c.close()


def test_slow_watcher_catches_up(server):
    """A stream that does not read while many revisions are written still
    gets every event, in order, once it reads again."""
    ch = server.channel()
    kv = rpc_pb2_grpc.KVStub(ch)
    st = WatchStream(ch)
    st.create(key=b"slow/", range_end=b"slow0")
    assert st.get().created
    # fill: values big enough that the HTTP/2 window and the server's
    # pending limit are exceeded while the pump thread is slow to consume
    val = b"v" * 60000
    n = 150
    for i in range(n):
        kv.Put(rpc_pb2.PutRequest(key=b"slow/%d" % (i % 7), value=val))
    revs = []
    while len(revs) < n:
        r = st.get(timeout=10)
        revs.extend(e.kv.mod_revision for e in r.events)
    assert revs == list(range(2, 2 + n))
    st.close()
    ch.close()
