"""Bad input on the client port: the server answers what etcd answers,
drops what it must, never crashes, and keeps serving everyone else.

  garbage bytes, truncated and malformed HTTP/2 frames, oversized gRPC
  messages (etcd's codes and texts, checked against real etcd), unknown
  services and methods, a request with an unknown field that protobuf-c
  cannot re-encode (found by fuzz_proto), slowloris clients (HTTP/1.1 and
  HTTP/2, bytes one at a time: dropped after --experimental-connection-
  timeout, as grpc-go drops connections that do not finish their handshake
  in its ConnectionTimeout), and 1,000 idle connections.

Run:  KETCH_BUILD=build KETCH_BIN=$PWD/build/ketch /usr/bin/python3 -m pytest -q tests/integration/test_bad_input.py
"""

import os
import random
import resource
import socket
import struct
import time

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc

from harness import ETCD, Server, is_etcd, server_under_test_binary

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TIMEOUT_S = 2  # --experimental-connection-timeout of the module's server

pytestmark = pytest.mark.skipif(is_etcd(server_under_test_binary()),
                                reason="ketch's --experimental-connection-timeout")


@pytest.fixture(scope="module")
def srv(request):
    s = Server(label="sut", extra_args=["--experimental-connection-timeout", "%ds" % TIMEOUT_S])
    request.addfinalizer(s.cleanup)
    s.start()
    return s


@pytest.fixture(scope="module")
def ref(request):
    s = Server(binary=ETCD, tmpfs=True, label="ref")
    request.addfinalizer(s.cleanup)
    s.start()
    return s


def kv(server):
    ch = grpc.insecure_channel(server.endpoint, options=[
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
    return ch, rpc_pb2_grpc.KVStub(ch)


def still_serving(server, key=b"alive"):
    """A put and a get through a fresh client succeed."""
    assert server.running(), server.log_tail()
    ch, stub = kv(server)
    try:
        v = os.urandom(8).hex().encode()
        stub.Put(rpc_pb2.PutRequest(key=key, value=v), timeout=20)
        r = stub.Range(rpc_pb2.RangeRequest(key=key), timeout=20)
        assert r.kvs[0].value == v
    finally:
        ch.close()


def connect(server):
    s = socket.create_connection(("127.0.0.1", server.client_port), timeout=20)
    return s


def read_until_closed(sock, deadline_s=30):
    """Reads until the server closes; returns everything read. Fails if the
    server keeps the connection open past the deadline."""
    sock.settimeout(1)
    got = b""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            b = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return got
        if not b:
            return got
        got += b
    raise AssertionError("the server did not close the connection (read %r)" % got[:200])


def h2_client():
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                             header_encoding="utf-8"))
    c.initiate_connection()
    return c


def frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def h2_events(conn, data):
    try:
        return conn.receive_data(data)
    except h2.exceptions.ProtocolError:
        return []


# ---------------------------------------------------------------------------

def test_garbage_is_refused_and_others_served(srv):
    rnd = random.Random(4)
    for i in range(20):
        s = connect(srv)
        junk = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 20000)))
        if i % 2:
            junk = PREFACE + junk  # garbage after a valid preface: HTTP/2 errors
        try:
            s.sendall(junk)
        except (ConnectionResetError, BrokenPipeError):
            pass
        got = read_until_closed(s)
        s.close()
        if i % 2 == 0 and junk[:1] not in (b"P",):
            # Not HTTP/2: the HTTP/1.1 side answers 400 (or waits for more
            # and is dropped at the deadline), never anything else.
            assert got == b"" or got.startswith(b"HTTP/1.1 4"), got[:100]
    still_serving(srv)


def test_http1_garbage_header_value_is_400(srv):
    # A NUL inside a header value (what fuzz_http1 found reading past a
    # buffer): refused like Go's net/http refuses it.
    s = connect(srv)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n")
    got = read_until_closed(s)
    s.close()
    assert got.startswith(b"HTTP/1.1 400 "), got
    still_serving(srv)


def test_truncated_http2_frames(srv):
    ch, stub = kv(srv)
    # A HEADERS frame that announces 1000 bytes and stops after 20, then the
    # client goes away: nothing is dispatched, the server stays up.
    for cut in (1, 9, 20):
        s = connect(srv)
        c = h2_client()
        s.sendall(c.data_to_send() + frame(1, 0x4, 1, os.urandom(1000))[:cut])
        s.shutdown(socket.SHUT_WR)
        read_until_closed(s)
        s.close()
    # A DATA frame on stream 0 is a connection error: GOAWAY(PROTOCOL_ERROR).
    s = connect(srv)
    c = h2_client()
    s.sendall(c.data_to_send() + frame(0, 0, 0, b"xyz"))
    got = read_until_closed(s)
    s.close()
    goaways = [e for e in h2_events(c, got) if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaways and goaways[0].error_code == 1, got  # PROTOCOL_ERROR
    # A gRPC message prefix announcing more bytes than the stream carries.
    s = connect(srv)
    c = h2_client()
    c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.KV/Range"),
                       (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")])
    c.send_data(1, struct.pack(">BI", 0, 100) + b"\x0a\x01", end_stream=True)
    s.sendall(c.data_to_send())
    s.settimeout(20)
    status = None
    end = time.monotonic() + 30
    while status is None and time.monotonic() < end:
        data = s.recv(65536)
        assert data, "closed without an answer"
        for e in h2_events(c, data):
            if isinstance(e, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                d = dict(e.headers)
                status = d.get("grpc-status", status)
        s.sendall(c.data_to_send())
    s.close()
    assert status == "13", status  # INTERNAL
    # The other client's channel was never disturbed.
    stub.Put(rpc_pb2.PutRequest(key=b"t", value=b"1"), timeout=20)
    ch.close()
    still_serving(srv)


def test_oversized_messages_as_etcd(srv, ref):
    """Over --max-request-bytes (1.5 MiB) but under gRPC's limit:
    etcd's "request is too large"; over the gRPC limit (max-request-bytes
    + 512 KiB): grpc-go's RESOURCE_EXHAUSTED text. Same code and text from
    ketch and real etcd."""
    def outcome(server, size):
        ch, stub = kv(server)
        try:
            stub.Put(rpc_pb2.PutRequest(key=b"big", value=b"x" * size), timeout=30)
            return ("OK", "")
        except grpc.RpcError as e:
            return (e.code().name, e.details())
        finally:
            ch.close()
    for size in (1600 * 1024, 3 * 1024 * 1024):
        got, want = outcome(srv, size), outcome(ref, size)
        assert got == want, (size, got, want)
        assert got[0] in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"), got
    still_serving(srv)


def test_unknown_services_and_methods_as_etcd(srv, ref):
    def outcome(server, path):
        ch = grpc.insecure_channel(server.endpoint)
        try:
            ch.unary_unary(path)(b"", timeout=20)
            return ("OK", "")
        except grpc.RpcError as e:
            return (e.code().name, e.details())
        finally:
            ch.close()
    for path in ("/etcdserverpb.Nope/Foo", "/etcdserverpb.KV/Nope", "/x/y"):
        got, want = outcome(srv, path), outcome(ref, path)
        assert got[0] == "UNIMPLEMENTED", got
        assert got == want, (path, got, want)


def test_unknown_field_zero_does_not_hang(srv):
    """fuzz_proto: protobuf-c accepts field number 0 but re-encodes it into
    bytes it then refuses; the proposal must not become an entry no member
    can apply (the client would wait forever)."""
    ch = grpc.insecure_channel(srv.endpoint)
    put = ch.unary_unary("/etcdserverpb.KV/Put")
    body = rpc_pb2.PutRequest(key=b"f0", value=b"v").SerializeToString() + b"\x80\x00\x01"
    try:
        put(body, timeout=20)
    except grpc.RpcError as e:
        assert e.code() != grpc.StatusCode.DEADLINE_EXCEEDED, e
    ch.close()
    still_serving(srv)


def slow_send(sock, data, until_closed_s):
    """Sends data one byte at a time, a byte every 100 ms, until the server
    closes the connection; returns the seconds that took."""
    start = time.monotonic()
    for b in data * 1000:
        try:
            sock.send(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
        try:
            sock.settimeout(0.1)
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except socket.timeout:
            pass
        except ConnectionResetError:
            return time.monotonic() - start
        if time.monotonic() - start > until_closed_s:
            raise AssertionError("slow client not dropped after %ds" % until_closed_s)
    raise AssertionError("ran out of bytes")


@pytest.mark.parametrize("kind", ["http1", "http2", "http2-after-preface"])
def test_slowloris_is_dropped_while_others_are_served(srv, kind):
    import threading
    results = []
    errors = []

    def others():
        try:
            ch, stub = kv(srv)
            t0 = time.monotonic()
            while time.monotonic() - t0 < TIMEOUT_S:
                stub.Put(rpc_pb2.PutRequest(key=b"busy", value=b"1"), timeout=20)
                results.append(1)
            ch.close()
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=others)
    t.start()
    s = connect(srv)
    if kind == "http1":
        data = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    elif kind == "http2":
        data = PREFACE
    else:
        s.sendall(PREFACE)
        data = frame(4, 0, 0, b"\x00" * 360)  # a SETTINGS frame that never ends
    took = slow_send(s, data, until_closed_s=60)
    s.close()
    t.join(60)
    assert not errors, errors
    assert results, "no other request was served meanwhile"
    assert took >= TIMEOUT_S * 0.9, took
    still_serving(srv)


def test_slow_but_complete_clients_and_idle_ones_are_kept(srv):
    # An HTTP/1.1 client that finished its request and then idles past the
    # timeout keeps its connection (as Go's server keeps it), and so does an
    # HTTP/2 client that finished its handshake.
    h1 = connect(srv)
    h1.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
    h1.settimeout(20)
    first = h1.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    ch, stub = kv(srv)
    stub.Range(rpc_pb2.RangeRequest(key=b"x"), timeout=20)
    # Wait past the deadline (and the sweep that enforces it).
    time.sleep(TIMEOUT_S * 2)
    h1.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
    again = h1.recv(65536)
    assert again.startswith(b"HTTP/1.1 200"), again
    h1.close()
    stub.Range(rpc_pb2.RangeRequest(key=b"x"), timeout=20)
    ch.close()


def test_a_thousand_idle_connections(request):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200 and hard >= 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("cannot open 1,000 sockets here")
    # The default connection timeout (2 min): idle connections stay open.
    s = Server(label="sut")
    request.addfinalizer(s.cleanup)
    s.start()
    idle = []
    try:
        for i in range(1000):
            idle.append(connect(s))
        # Half of them start talking HTTP/2 and then say nothing more.
        for c in idle[::2]:
            c.sendall(PREFACE + frame(4, 0, 0, b""))
        still_serving(s)
        # Any of them can still be used.
        for c in idle[1::100]:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            c.settimeout(20)
            r = c.recv(65536)
            assert r.startswith(b"HTTP/1.1 200"), r
        still_serving(s)
    finally:
        for c in idle:
            c.close()
    still_serving(s)


def test_health_without_a_leader(request):
    """A member whose only peer never comes up has no leader: /health says
    so as etcd 3.5 does (503, {"health":"false","reason":"RAFT NO LEADER"}),
    and keeps saying it while the member waits."""
    import http.client
    import json
    s = Server(label="sut")
    other = "http://127.0.0.1:%d" % s.client_port  # nobody listens there as a peer
    s.extra_args = ["--initial-cluster", "%s=%s,other=%s" % (s.name, s.peer_url, other)]
    request.addfinalizer(s.cleanup)
    s.start(wait=False)
    end = time.monotonic() + 30
    body = None
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", s.client_port, timeout=10)
            c.request("GET", "/health")
            r = c.getresponse()
            status, body = r.status, r.read()
            c.close()
            break
        except (ConnectionRefusedError, ConnectionResetError):
            time.sleep(0.2)
    assert body is not None, s.log_tail()
    assert status == 503, (status, body)
    assert json.loads(body) == {"health": "false", "reason": "RAFT NO LEADER"}, body
    assert s.running()
