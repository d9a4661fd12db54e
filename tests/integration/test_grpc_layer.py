"""The gRPC layer alone (src/grpc), through tests/tools/grpc_testserver.c,
with real clients: python grpcio and Debian's etcdctl.

Run:  KETCH_BUILD=build /usr/bin/python3 -m pytest -q tests/integration/test_grpc_layer.py
      (KETCH_BUILD=build-asan runs the same against the sanitized build; the
      server must then exit 0 on SIGTERM with nothing reported.)
"""

import os
import socket
import subprocess
import threading
import time

import grpc
import pytest
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("KETCH_BUILD", "build")
BIN = os.path.join(BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD),
                   "tools", "grpc_testserver")
MAX_RECV = 2 * 1024 * 1024
BIG_CHANNEL = [("grpc.max_receive_message_length", -1),
               ("grpc.max_send_message_length", -1)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GrpcTestServer:
    def __init__(self):
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.proc = subprocess.Popen([BIN, str(self.port), str(MAX_RECV)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env)
        line = self.proc.stdout.readline().decode()
        assert "listening" in line, line + self.proc.stderr.read().decode()

    stopped = False

    def stop(self):
        """SIGTERM; the server must exit 0 with no sanitizer report."""
        self.stopped = True
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail("test server did not exit on SIGTERM")
        err = err.decode(errors="replace")
        assert "ERROR: AddressSanitizer" not in err, err
        assert "ERROR: LeakSanitizer" not in err, err
        assert "runtime error" not in err, err
        assert self.proc.returncode == 0, err


@pytest.fixture
def server():
    if not os.path.exists(BIN):
        pytest.skip("%s not built" % BIN)
    s = GrpcTestServer()
    yield s
    if not s.stopped:
        assert s.proc.poll() is None, "server died"
        s.stop()


def channel(server, **kw):
    return grpc.insecure_channel(server.addr, options=BIG_CHANNEL, **kw)


def kv(ch):
    return rpc_pb2_grpc.KVStub(ch)


def range_ok(ch, key=b"foo", timeout=10):
    r = kv(ch).Range(rpc_pb2.RangeRequest(key=key), timeout=timeout)
    assert r.count == 1 and r.kvs[0].key == key and r.kvs[0].value == key
    return r


def test_unary_roundtrip(server):
    with channel(server) as ch:
        r = range_ok(ch, b"hello")
        assert r.header.revision == 1
        # empty request message (all defaults) is a valid zero-length message
        r = kv(ch).Range(rpc_pb2.RangeRequest(), timeout=10)
        assert r.count == 1 and r.kvs[0].key == b""


def test_metadata(server):
    with channel(server) as ch:
        r = kv(ch).Range(rpc_pb2.RangeRequest(key=b"hdr:token"), timeout=10,
                         metadata=[("token", "abc.def")])
        assert r.kvs[0].value == b"abc.def"
        r = kv(ch).Range(rpc_pb2.RangeRequest(key=b"hdr:missing"), timeout=10)
        assert r.kvs[0].value == b""


def test_concurrent_calls_one_channel(server):
    with channel(server) as ch:
        stub = kv(ch)
        futs = [stub.Range.future(rpc_pb2.RangeRequest(key=b"k%d" % i), timeout=20)
                for i in range(200)]
        for i, f in enumerate(futs):
            assert f.result().kvs[0].key == b"k%d" % i
        # and concurrent delayed calls overlap instead of queueing
        t0 = time.time()
        futs = [stub.Put.future(rpc_pb2.PutRequest(key=b"p", value=b"300"), timeout=20)
                for _ in range(200)]
        for f in futs:
            assert f.result().header.revision == 300
        assert time.time() - t0 < 5


def test_many_channels(server):
    errors = []

    def worker(i):
        try:
            with channel(server) as ch:
                for j in range(20):
                    range_ok(ch, b"c%d-%d" % (i, j))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_unknown_method_and_service(server):
    ident = lambda b: b  # noqa: E731
    with channel(server) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/etcdserverpb.KV/Bar", request_serializer=ident,
                           response_deserializer=ident)(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert e.value.details() == "unknown method Bar for service etcdserverpb.KV"
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/etcdserverpb.Foo/Range", request_serializer=ident,
                           response_deserializer=ident)(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert e.value.details() == "unknown service etcdserverpb.Foo"
        # a known service through the generated stub too
        with pytest.raises(grpc.RpcError) as e:
            kv(ch).DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"a"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert e.value.details() == "unknown method DeleteRange for service etcdserverpb.KV"
        range_ok(ch)


def test_deadline_exceeded(server):
    with channel(server) as ch:
        stub = kv(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.Put(rpc_pb2.PutRequest(key=b"slow", value=b"1000"), timeout=0.2)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # many expire at once while their handlers answer later
        futs = [stub.Put.future(rpc_pb2.PutRequest(key=b"s", value=b"500"), timeout=0.1)
                for _ in range(50)]
        for f in futs:
            with pytest.raises(grpc.RpcError) as e:
                f.result()
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.2)  # the late replies happen now: no crash
        range_ok(ch)
        r = stub.Put(rpc_pb2.PutRequest(key=b"fast", value=b"10"), timeout=5)
        assert r.header.revision == 10


def test_deadline_from_server_side(server):
    """grpc-timeout is honoured by the server itself: a raw HTTP/2 client that
    never gives up still gets DEADLINE_EXCEEDED from the server."""
    with channel(server) as ch:
        # grpcio would cancel locally at the same moment; the server's own
        # answer is checked by the h2 test below. Here: server stays healthy.
        with pytest.raises(grpc.RpcError):
            kv(ch).Put(rpc_pb2.PutRequest(key=b"x", value=b"300"), timeout=0.05)
        range_ok(ch)
    h2 = H2Raw(server.port)
    body = rpc_pb2.PutRequest(key=b"x", value=b"2000").SerializeToString()
    status, message = h2.unary("/etcdserverpb.KV/Put", body, extra=[("grpc-timeout", "100m")])
    assert status == "4" and message == "context deadline exceeded"
    h2.close()


def test_oversized_message(server):
    with channel(server) as ch:
        with pytest.raises(grpc.RpcError) as e:
            kv(ch).Put(rpc_pb2.PutRequest(key=b"big", value=b"x" * (3 * 1024 * 1024)),
                       timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert e.value.details().startswith("grpc: received message larger than max (")
        assert e.value.details().endswith(" vs. %d)" % MAX_RECV)
        range_ok(ch)
        # just under the limit is fine
        r = kv(ch).Range(rpc_pb2.RangeRequest(key=b"y" * (MAX_RECV - 100)), timeout=10)
        assert len(r.kvs[0].value) == MAX_RECV - 100


def test_bidi_stream(server):
    with channel(server) as ch:
        stub = rpc_pb2_grpc.WatchStub(ch)
        keys = [b"w%d" % i for i in range(10)]

        def reqs():
            for k in keys:
                yield rpc_pb2.WatchRequest(
                    create_request=rpc_pb2.WatchCreateRequest(key=k))

        got = list(stub.Watch(reqs(), timeout=10))
        assert [r.watch_id for r in got] == list(range(1, 11))
        assert [r.events[0].kv.key for r in got] == keys
        assert all(r.created for r in got)


def test_bidi_stream_interactive_and_cancel(server):
    with channel(server) as ch:
        stub = rpc_pb2_grpc.WatchStub(ch)
        import queue
        q = queue.Queue()

        def reqs():
            while True:
                item = q.get()
                if item is None:
                    return
                yield item

        it = stub.Watch(reqs(), timeout=30)
        for i in range(5):
            q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"i%d" % i)))
            r = next(it)
            assert r.watch_id == i + 1 and r.events[0].kv.key == b"i%d" % i
        it.cancel()  # RST_STREAM: on_close must run, nothing leaks
        q.put(None)
        # streams left open when the channel closes (connection loss)
        it2 = stub.Watch(iter([rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(key=b"z"))] * 3), timeout=30)
        assert next(it2).events[0].kv.key == b"z"
    with channel(server) as ch:
        q2 = __import__("queue").Queue()
        it3 = rpc_pb2_grpc.WatchStub(ch).Watch(iter(q2.get, None), timeout=30)
        q2.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"q")))
        assert next(it3).watch_id == 1
    # the channel is closed with the stream open
    with channel(server) as ch:
        range_ok(ch)


def test_garbage_closes_connection_only(server):
    with channel(server) as ch:
        range_ok(ch)
        for payload in [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                        os.urandom(4096),
                        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 100]:
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(payload)
            s.settimeout(5)
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            s.close()  # the server closed it (recv returned EOF or reset)
            range_ok(ch)


def test_large_response(server):
    with channel(server) as ch:
        for size in (5 * 1024 * 1024, 12 * 1024 * 1024):
            r = kv(ch).Range(rpc_pb2.RangeRequest(key=b"big", limit=size), timeout=30)
            v = r.kvs[0].value
            assert len(v) == size
            assert v[:26] == b"abcdefghijklmnopqrstuvwxyz" and v[-1:] == bytes([97 + (size - 1) % 26])
        # several at once on one connection
        futs = [kv(ch).Range.future(rpc_pb2.RangeRequest(key=b"big", limit=3 * 1024 * 1024),
                                    timeout=30) for _ in range(8)]
        for f in futs:
            assert len(f.result().kvs[0].value) == 3 * 1024 * 1024


def test_etcdctl(server):
    env = dict(os.environ, ETCDCTL_API="3")
    out = subprocess.run(["etcdctl", "--endpoints=" + server.addr, "get", "foo", "-w", "json"],
                         env=env, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert b'"kvs":[{"key":"Zm9v"' in out.stdout
    out = subprocess.run(["etcdctl", "--endpoints=" + server.addr, "put", "foo", "5"],
                         env=env, capture_output=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == b"OK", out
    out = subprocess.run(["etcdctl", "--endpoints=" + server.addr, "--command-timeout=300ms",
                          "put", "foo", "3000"], env=env, capture_output=True, timeout=30)
    assert out.returncode != 0 and b"context deadline exceeded" in out.stderr, out
    out = subprocess.run(["etcdctl", "--endpoints=" + server.addr, "del", "foo"],
                         env=env, capture_output=True, timeout=30)
    assert out.returncode != 0
    assert b"unknown method DeleteRange for service etcdserverpb.KV" in out.stderr


def test_listen_port_in_use():
    """A second server on a taken port reports it and exits cleanly."""
    if not os.path.exists(BIN):
        pytest.skip("%s not built" % BIN)
    s = GrpcTestServer()
    try:
        out = subprocess.run([BIN, str(s.port)], capture_output=True, timeout=20)
        assert out.returncode == 1
        assert b"address already in use" in out.stderr, out.stderr
        assert b"Sanitizer" not in out.stderr, out.stderr
    finally:
        s.stop()


def test_http_errors_do_not_crash(server):
    h2 = H2Raw(server.port)
    # wrong content-type → 415
    st = h2.request([(":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.KV/Range"),
                     (":authority", "x"), ("content-type", "text/plain")], b"", end=True)
    assert st["headers"][":status"] == "415"
    # GET → 405
    st = h2.request([(":method", "GET"), (":scheme", "http"), (":path", "/etcdserverpb.KV/Range"),
                     (":authority", "x")], None, end=True)
    assert st["headers"][":status"] == "405"
    # compressed flag without a decompressor
    st = h2.request(grpc_headers("/etcdserverpb.KV/Range") + [("grpc-encoding", "gzip")],
                    b"\x01\x00\x00\x00\x01\x00", end=True)
    assert st["headers"].get("grpc-status") == "12", st
    # unary with no message
    st = h2.request(grpc_headers("/etcdserverpb.KV/Range"), b"", end=True)
    assert st["headers"].get("grpc-status") == "13", st
    # message split byte by byte over many DATA frames
    body = rpc_pb2.RangeRequest(key=b"split").SerializeToString()
    framed = b"\x00" + len(body).to_bytes(4, "big") + body
    st = h2.request(grpc_headers("/etcdserverpb.KV/Range"), [framed[i:i + 1] for i in range(len(framed))],
                    end=True)
    assert st["trailers"].get("grpc-status") == "0", st
    resp = rpc_pb2.RangeResponse.FromString(st["data"][5:])
    assert resp.kvs[0].key == b"split"
    # grpc-message percent-encoding
    st = h2.request(grpc_headers("/etcdserverpb.KV/Ünïcode%"), b"", end=True)
    assert st["headers"]["grpc-message"] == \
        "unknown method %C3%9Cn%C3%AFcode%25 for service etcdserverpb.KV", st
    h2.close()
    with channel(server) as ch:
        range_ok(ch)


# ---- a tiny raw HTTP/2 client (h2 is not in Debian's python3 by default:
# use it if present, else skip the raw tests) ----

def grpc_headers(path, extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
            ("content-type", "application/grpc"), ("te", "trailers")] + list(extra)


class H2Raw:
    def __init__(self, port):
        h2 = pytest.importorskip("h2.connection")
        import h2.config
        import h2.events
        self.ev = h2.events
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def request(self, headers, body, end=True):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            chunks = body if isinstance(body, list) else [body]
            for i, c in enumerate(chunks):
                self.conn.send_data(sid, c, end_stream=end and i == len(chunks) - 1)
            if not chunks:
                self.conn.end_stream(sid)
        self.sock.sendall(self.conn.data_to_send())
        st = {"headers": {}, "trailers": {}, "data": b""}
        while True:
            data = self.sock.recv(65536)
            assert data, "connection closed"
            for e in self.conn.receive_data(data):
                if getattr(e, "stream_id", None) != sid:
                    continue
                if isinstance(e, self.ev.ResponseReceived):
                    st["headers"] = dict(e.headers)
                elif isinstance(e, self.ev.TrailersReceived):
                    st["trailers"] = dict(e.headers)
                elif isinstance(e, self.ev.DataReceived):
                    st["data"] += e.data
                    self.conn.acknowledge_received_data(e.flow_controlled_length, sid)
                if isinstance(e, (self.ev.StreamEnded, self.ev.StreamReset)):
                    self.sock.sendall(self.conn.data_to_send())
                    return st
            self.sock.sendall(self.conn.data_to_send())

    def unary(self, path, body, extra=()):
        framed = b"\x00" + len(body).to_bytes(4, "big") + body
        st = self.request(grpc_headers(path, extra), framed)
        h = st["trailers"] or st["headers"]
        return h.get("grpc-status"), h.get("grpc-message")

    def close(self):
        self.sock.close()


def test_stream_many_messages(server):
    """Many small messages per DATA frame (dispatched without copying) and
    messages split across frames (big ones)."""
    with channel(server) as ch:
        stub = rpc_pb2_grpc.WatchStub(ch)
        keys = [b"m%d" % i for i in range(2000)] + [b"K" * 100000 for _ in range(5)]

        def reqs():
            for k in keys:
                yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=k))

        got = list(stub.Watch(reqs(), timeout=30))
        assert [r.events[0].kv.key for r in got] == keys


def test_connection_closed_with_calls_pending(server):
    """Calls whose handler answers after the client went away: the late
    replies are no-ops, on_close runs for open streams, nothing leaks."""
    for _ in range(3):
        ch = channel(server)
        stub = kv(ch)
        futs = [stub.Put.future(rpc_pb2.PutRequest(key=b"p", value=b"300")) for _ in range(100)]
        q = __import__("queue").Queue()
        it = rpc_pb2_grpc.WatchStub(ch).Watch(iter(q.get, None))
        q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"x")))
        assert next(it).watch_id == 1
        ch.close()
        for f in futs:
            with pytest.raises(grpc.RpcError):
                f.result()
        q.put(None)
    time.sleep(0.6)
    with channel(server) as ch:
        range_ok(ch)


def test_shutdown_with_calls_pending(server):
    """SIGTERM while calls wait for their handler and streams are open: the
    fixture checks the server still exits 0 and clean under ASan."""
    ch = channel(server)
    stub = kv(ch)
    futs = [stub.Put.future(rpc_pb2.PutRequest(key=b"p", value=b"5000")) for _ in range(20)]
    q = __import__("queue").Queue()
    it = rpc_pb2_grpc.WatchStub(ch).Watch(iter(q.get, None))
    q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"x")))
    assert next(it).watch_id == 1
    time.sleep(0.2)
    server.stop()
    for f in futs:
        with pytest.raises(grpc.RpcError):
            f.result(timeout=10)
    q.put(None)
    ch.close()
