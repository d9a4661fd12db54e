#!/usr/bin/python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Run with Debian's /usr/bin/python3 (python3-h2 and python3-etcd3 provide
the HTTP/2 frames and the etcd protobuf messages). The seeds are committed;
rerun this after changing it. Message-type bytes follow `types[]` in
fuzz/fuzz_msg.c."""
import os
import ssl
import struct
import sys

import h2.config
import h2.connection
from etcd3.etcdrpc import rpc_pb2

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def grpc_msg(b, flag=0):
    return struct.pack(">BI", flag, len(b)) + b


def h2_client():
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    return c


def headers(path, ctype="application/grpc", method="POST", extra=()):
    return [(":method", method), (":scheme", "http"), (":path", path),
            (":authority", "127.0.0.1"), ("content-type", ctype), ("te", "trailers")] + list(extra)


def h2_seed(name, build):
    c = h2_client()
    build(c)
    data = c.data_to_send()
    assert data.startswith(PREFACE)
    write("fuzz_h2", name, data[len(PREFACE):])


def h2_seeds():
    rng = rpc_pb2.RangeRequest(key=b"foo", range_end=b"fop", limit=10).SerializeToString()
    watch = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"a")).SerializeToString()

    def unary(c):
        c.send_headers(1, headers("/etcdserverpb.KV/Range"))
        c.send_data(1, grpc_msg(rng), end_stream=True)
    h2_seed("unary", unary)

    def two_unary_split(c):
        m = grpc_msg(rng)
        c.send_headers(1, headers("/etcdserverpb.KV/Range", extra=[("grpc-timeout", "5S")]))
        c.send_data(1, m[:3])
        c.send_data(1, m[3:], end_stream=True)
        c.send_headers(3, headers("/etcdserverpb.KV/Put", extra=[("token", "abc")]))
        c.send_data(3, grpc_msg(b""), end_stream=True)
    h2_seed("unary_split", two_unary_split)

    def stream(c):
        c.send_headers(1, headers("/etcdserverpb.Watch/Watch"))
        c.send_data(1, grpc_msg(watch) + grpc_msg(watch)[:4])
        c.send_data(1, grpc_msg(watch)[4:])
        c.ping(b"12345678")
        c.increment_flow_control_window(65535)
        c.send_data(1, b"", end_stream=True)
    h2_seed("stream_half_close", stream)

    def keep(c):
        c.send_headers(1, headers("/etcdserverpb.Lease/LeaseKeepAlive"))
        c.send_data(1, grpc_msg(b"\x08\x01"), end_stream=True)
    h2_seed("half_close_kept", keep)

    def stream_reset(c):
        c.send_headers(1, headers("/etcdserverpb.Watch/Watch"))
        c.send_data(1, grpc_msg(watch))
        c.reset_stream(1)
        c.close_connection()
    h2_seed("stream_reset", stream_reset)

    def bad(c):
        c.send_headers(1, headers("/etcdserverpb.KV/Range", ctype="text/plain"), end_stream=True)
        c.send_headers(3, headers("/etcdserverpb.KV/Range", method="GET"), end_stream=True)
        c.send_headers(5, headers("/nope.Svc/M"), end_stream=True)
        c.send_headers(7, headers("/etcdserverpb.KV/Nope"), end_stream=True)
        c.send_headers(9, headers("/etcdserverpb.KV/Range", extra=[("grpc-timeout", "xx")]),
                       end_stream=True)
        c.send_headers(11, headers("/etcdserverpb.KV/Range"))
        c.send_data(11, struct.pack(">BI", 0, 1 << 30), end_stream=True)
        c.send_headers(13, headers("/etcdserverpb.KV/Range", extra=[("grpc-encoding", "gzip")]))
        c.send_data(13, grpc_msg(rng, flag=1), end_stream=True)
        c.send_headers(15, headers("/etcdserverpb.KV/Range"))
        c.send_data(15, grpc_msg(rng) + grpc_msg(rng), end_stream=True)
        c.send_headers(17, headers("/etcdserverpb.KV/Range"))
        c.send_data(17, b"\0\0", end_stream=True)
    h2_seed("bad_requests", bad)

    def deadline(c):
        c.send_headers(1, headers("/etcdserverpb.Watch/Watch", extra=[("grpc-timeout", "1n")]))
        c.send_data(1, grpc_msg(watch))
    h2_seed("deadline", deadline)

    def settings(c):
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1,
                           h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384})
        c.send_headers(1, headers("/etcdserverpb.KV/Range"))
        c.send_data(1, grpc_msg(rng), end_stream=True)
    h2_seed("small_window", settings)


def http1_seeds():
    write("fuzz_http1", "get_health", b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    body = b'{"key":"Zm9v"}'
    write("fuzz_http1", "post_pipelined",
          b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
          + b"GET /version HTTP/1.0\r\n\r\n")
    write("fuzz_http1", "expect_continue",
          b"POST /v3/kv/put HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nabcd")
    write("fuzz_http1", "chunked",
          b"POST /v3/kv/put HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n")
    write("fuzz_http1", "x_fail_close",
          b"GET /x HTTP/1.1\r\nX-Fail: 1\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    write("fuzz_http1", "garbage", b"\x16\x03\x01\x00\xa5\x01\x00\x00")
    write("fuzz_http1", "stream_then_next",
          b"POST /stream HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /x HTTP/1.1\r\n\r\n")
    write("fuzz_http1", "stream_http10", b"POST /stream HTTP/1.0\r\nContent-Length: 2\r\n\r\nab")
    write("fuzz_http1", "hold", b"POST /hold HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.1\r\n\r\n")
    write("fuzz_http1", "half_preface", PREFACE[:10] + b"XX")


def tls_seeds():
    for name, alpn, maxv in (("hello_h2_tls13", ["h2"], ssl.TLSVersion.TLSv1_3),
                             ("hello_http1_tls12", ["http/1.1"], ssl.TLSVersion.TLSv1_2),
                             ("hello_both", ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_3)):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = maxv
        ctx.set_alpn_protocols(alpn)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        write("fuzz_tls", name, out.read())
    write("fuzz_tls", "plaintext_on_tls", b"GET /health HTTP/1.1\r\n\r\n")


# Indexes in fuzz_msg.c's types[].
T_RANGE, T_PUT, T_DELETE, T_TXN, T_COMPACT = 0, 1, 2, 3, 4
T_WATCH, T_GRANT, T_KEEPALIVE, T_TTL = 8, 9, 11, 12


def msg_seeds():
    txn = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(result=rpc_pb2.Compare.GREATER, target=rpc_pb2.Compare.MOD,
                                 key=b"k", mod_revision=3)],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k", value=b"v", lease=7))],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"k"))])
    msgs = {
        "range": (T_RANGE, rpc_pb2.RangeRequest(key=b"a", range_end=b"\0", limit=5, revision=2,
                                                 sort_order=rpc_pb2.RangeRequest.DESCEND,
                                                 serializable=True)),
        "put": (T_PUT, rpc_pb2.PutRequest(key=b"foo", value=b"bar" * 10, prev_kv=True)),
        "delete": (T_DELETE, rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"b")),
        "txn": (T_TXN, txn),
        "compact": (T_COMPACT, rpc_pb2.CompactionRequest(revision=9, physical=True)),
        "watch": (T_WATCH, rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"a", range_end=b"b", start_revision=1, progress_notify=True,
            filters=[rpc_pb2.WatchCreateRequest.NOPUT], prev_kv=True))),
        "grant": (T_GRANT, rpc_pb2.LeaseGrantRequest(TTL=60, ID=1234)),
        "keepalive": (T_KEEPALIVE, rpc_pb2.LeaseKeepAliveRequest(ID=1234)),
        "ttl": (T_TTL, rpc_pb2.LeaseTimeToLiveRequest(ID=-1, keys=True)),
    }
    for name, (t, m) in msgs.items():
        write("fuzz_proto", name, bytes([t]) + m.SerializeToString())
    jsons = {
        "range": (T_RANGE, b'{"key":"YQ==","range_end":"AA==","limit":"5","sort_order":"DESCEND",'
                           b'"serializable":true}'),
        "put": (T_PUT, b'{"key":"Zm9v","value":"YmFy","lease":12,"prevKv":true}'),
        "txn": (T_TXN, b'{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmFy"}],'
                       b'"success":[{"request_put":{"key":"Zm9v","value":"YmF6"}}],'
                       b'"failure":[{"request_range":{"key":"Zm9v"}}]}'),
        "watch": (T_WATCH, b'{"create_request":{"key":"YQ","range_end":"Yg==","start_revision":"1",'
                           b'"filters":["NOPUT",1]}}'),
        "grant": (T_GRANT, b'{"TTL":"60","ID":1e3}'),
        "compact": (T_COMPACT, b'{"revision":"-1","physical":false}'),
        "bad": (T_RANGE, b'{"key":12,"limit":"x","nope":[1,2,{}]}'),
    }
    for name, (t, j) in jsons.items():
        write("fuzz_json", name, bytes([t]) + j)


if __name__ == "__main__":
    h2_seeds()
    http1_seeds()
    tls_seeds()
    msg_seeds()
    sys.exit(0)
