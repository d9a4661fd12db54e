"""HTTP/1.1 on the client port: /health, /version, /metrics and the JSON
gateway (/v3/...), compared with real etcd where it answers the same."""

import http.client
import json
import os
import re
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import Server, is_etcd, server_under_test_binary, _test_deadline  # noqa: F401,E402
from harness import server, ref_etcd  # noqa: F401,E402

KETCH = not is_etcd(server_under_test_binary())


def request(s, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", s.client_port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        c.close()


def post(s, path, obj):
    st, _, body = request(s, "POST", path, json.dumps(obj))
    return st, json.loads(body)


def b64(x):
    import base64
    return base64.b64encode(x.encode()).decode()


def strip_ids(o):
    """Drops what differs between two fresh single members."""
    if isinstance(o, dict):
        return {k: strip_ids(v) for k, v in o.items()
                if k not in ("cluster_id", "member_id", "raft_term")}
    if isinstance(o, list):
        return [strip_ids(v) for v in o]
    return o


def test_health(server):
    st, ct, body = request(server, "GET", "/health")
    assert st == 200
    h = json.loads(body)
    assert h["health"] == "true"
    if KETCH:
        assert body == b'{"health":"true","reason":""}'
    st, _, _ = request(server, "POST", "/health")
    assert st == 405


def test_version(server):
    st, ct, body = request(server, "GET", "/version")
    assert st == 200 and ct == "application/json"
    v = json.loads(body)
    assert set(v) == {"etcdserver", "etcdcluster"}
    if KETCH:
        assert v == {"etcdserver": "3.5.0", "etcdcluster": "3.5.0"}


def metrics(s):
    st, ct, body = request(s, "GET", "/metrics")
    assert st == 200 and ct.startswith("text/plain")
    vals = {}
    types = {}
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, t = line.split()
            types[name] = t
        elif line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            vals[k] = float(v)
    return vals, types


NAMES = ["etcd_server_has_leader", "etcd_server_is_leader",
         "etcd_server_proposals_committed_total", "etcd_server_proposals_applied_total",
         "etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes",
         "etcd_debugging_mvcc_current_revision", "grpc_server_handled_total",
         "grpc_server_started_total"]


def test_metrics(server):
    vals, types = metrics(server)
    for n in NAMES:
        assert n in types, n
    assert vals["etcd_server_has_leader"] == 1
    assert vals["etcd_server_is_leader"] == 1
    assert vals["etcd_mvcc_db_total_size_in_bytes"] > 0
    put_key = ('grpc_server_handled_total{grpc_code="OK",grpc_method="Put",'
               'grpc_service="etcdserverpb.KV",grpc_type="unary"}')
    started_key = ('grpc_server_started_total{grpc_method="Put",'
                   'grpc_service="etcdserverpb.KV",grpc_type="unary"}')
    before_put = vals.get(put_key, 0)
    before_started = vals.get(started_key, 0)
    rev = vals["etcd_debugging_mvcc_current_revision"]
    applied = vals["etcd_server_proposals_applied_total"]
    for i in range(3):
        assert server.etcdctl("put", "m%d" % i, "v").returncode == 0
    vals, _ = metrics(server)
    assert vals[put_key] == before_put + 3
    assert vals[started_key] == before_started + 3
    assert vals["etcd_debugging_mvcc_current_revision"] == rev + 3
    assert vals["etcd_server_proposals_applied_total"] >= applied + 3
    assert vals["etcd_server_proposals_committed_total"] >= vals["etcd_server_proposals_applied_total"]
    # a failing call is counted with its code
    assert server.etcdctl("get", "").returncode != 0 or True
    st, _ = post(server, "/v3/kv/range", {"key": ""})
    assert st == 400
    vals, _ = metrics(server)
    assert vals[('grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Range",'
                 'grpc_service="etcdserverpb.KV",grpc_type="unary"}')] >= 1


GATEWAY_SCRIPT = [
    ("/v3/kv/put", {"key": b64("foo"), "value": b64("bar")}),
    ("/v3/kv/put", {"key": b64("foo"), "value": b64("baz"), "prev_kv": True}),
    ("/v3/kv/put", {"key": b64("foo2"), "value": b64("x"), "prevKv": True}),
    ("/v3/kv/range", {"key": b64("foo")}),
    ("/v3/kv/range", {"key": b64("foo"), "range_end": b64("fop"), "keys_only": True}),
    ("/v3/kv/range", {"key": b64("f"), "range_end": b64("g"), "sort_order": "DESCEND",
                      "sort_target": "KEY", "limit": "1"}),
    ("/v3/kv/range", {"key": b64("foo"), "revision": 2}),
    ("/v3/kv/range", {"key": b64("nope")}),
    ("/v3/kv/range", {"key": ""}),
    ("/v3/kv/range", {}),
    ("/v3/kv/put", {"key": b64("k"), "value": b64("v"), "lease": "12345"}),
    ("/v3/kv/txn", {"compare": [{"key": b64("foo"), "result": "EQUAL", "target": "VALUE",
                                 "value": b64("baz")}],
                    "success": [{"request_put": {"key": b64("t"), "value": b64("1")}},
                                {"request_range": {"key": b64("foo")}}],
                    "failure": [{"request_range": {"key": b64("foo")}}]}),
    ("/v3/kv/txn", {"compare": [{"key": b64("foo"), "result": "GREATER", "target": "MOD",
                                 "mod_revision": "100"}],
                    "success": [{"request_delete_range": {"key": b64("t")}}],
                    "failure": [{"request_range": {"key": b64("t")}}]}),
    ("/v3/kv/deleterange", {"key": b64("foo"), "range_end": b64("fop"), "prev_kv": True}),
    ("/v3/kv/deleterange", {"key": b64("gone")}),
    ("/v3/kv/compaction", {"revision": "3"}),
    ("/v3/kv/compaction", {"revision": 2}),
    ("/v3/kv/range", {"key": b64("foo"), "revision": 2}),
    ("/v3/kv/compaction", {"revision": "1000"}),
]


def test_gateway_matches_etcd(server, ref_etcd):
    for path, req in GATEWAY_SCRIPT:
        a = request(server, "POST", path, json.dumps(req))
        b = request(ref_etcd, "POST", path, json.dumps(req))
        assert a[0] == b[0], (path, req, a, b)
        ja, jb = strip_ids(json.loads(a[2])), strip_ids(json.loads(b[2]))
        assert ja == jb, (path, req, a[2], b[2])
        # byte for byte, apart from the IDs
        assert json.dumps(ja) == json.dumps(jb)


def test_gateway_bytes(server):
    st, ct, body = request(server, "POST", "/v3/kv/put",
                           json.dumps({"key": b64("a"), "value": b64("b")}))
    assert st == 200 and ct == "application/json"
    assert re.fullmatch(rb'\{"header":\{"cluster_id":"\d+","member_id":"\d+","revision":"2",'
                        rb'"raft_term":"\d+"\}\}', body), body
    st, ct, body = request(server, "POST", "/v3/kv/range", json.dumps({"key": ""}))
    assert st == 400
    assert body == (b'{"error":"etcdserver: key is not provided","message":'
                    b'"etcdserver: key is not provided","code":3}')


def test_gateway_status_and_lease(server):
    st, r = post(server, "/v3/maintenance/status", {})
    assert st == 200
    assert int(r["dbSize"]) > 0 and r["leader"] == r["header"]["member_id"]
    st, r = post(server, "/v3/lease/grant", {"TTL": "60"})
    assert st == 200 and r["TTL"] == "60"
    lid = r["ID"]
    st, r = post(server, "/v3/kv/put", {"key": b64("l"), "value": b64("v"), "lease": lid})
    assert st == 200
    st, r = post(server, "/v3/lease/timetolive", {"ID": lid, "keys": True})
    assert st == 200 and r["keys"] == [b64("l")]
    st, r = post(server, "/v3/lease/leases", {})
    assert st == 200 and r["leases"] == [{"ID": lid}]
    st, r = post(server, "/v3/lease/revoke", {"ID": lid})
    assert st == 200
    st, r = post(server, "/v3/lease/revoke", {"ID": lid})
    assert st == 404 and r["error"] == "etcdserver: requested lease not found" and r["code"] == 5


def test_gateway_bad_requests(server):
    st, _, body = request(server, "POST", "/v3/kv/range", "{bad")
    assert st == 400 and json.loads(body)["code"] == 3
    st, _, body = request(server, "POST", "/v3/kv/range", json.dumps({"key": 5}))
    assert st == 400 and json.loads(body)["code"] == 3
    st, _, body = request(server, "POST", "/v3/kv/range", json.dumps({"key": "!!!"}))
    assert st == 400
    st, _, _ = request(server, "GET", "/v3/kv/range")
    assert st == 405
    st, _, body = request(server, "GET", "/nothing-here")
    assert st == 404


def test_keep_alive_and_pipelining(server):
    c = http.client.HTTPConnection("127.0.0.1", server.client_port, timeout=10)
    for i in range(5):
        c.request("POST", "/v3/kv/put", json.dumps({"key": b64("ka%d" % i), "value": b64("v")}))
        r = c.getresponse()
        assert r.status == 200
        r.read()
    c.close()
    # two requests in one write
    req = json.dumps({"key": b64("ka0")}).encode()
    one = (b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(req)) + req
    with socket.create_connection(("127.0.0.1", server.client_port), timeout=10) as s:
        s.sendall(one + one.replace(b"Host: x", b"Host: x\r\nConnection: close"))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2


def test_large_body_with_expect(server):
    # curl sends "Expect: 100-continue" for bodies over 1 KiB
    val = "x" * 100000
    body = json.dumps({"key": b64("big"), "value": b64(val)}).encode()
    with socket.create_connection(("127.0.0.1", server.client_port), timeout=10) as s:
        s.sendall(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        first = s.recv(100)
        assert first.startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        data = first
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert b"HTTP/1.1 200 OK" in data
    st, r = post(server, "/v3/kv/range", {"key": b64("big")})
    assert len(r["kvs"][0]["value"]) == len(b64(val))


@pytest.mark.parametrize("payload", [
    b"GET /health HTTP/1.1\r\nHost: x\r\n",           # truncated head
    b"POST /v3/kv/put HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"key\"",  # truncated body
    b"\x00\x01\x02garbage\r\n\r\n",
    b"GET /health HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"GET /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /health HTTP/1.1\r\n" + b"X-Long: " + b"a" * 100000 + b"\r\n\r\n",
    b"POST /v3/kv/put HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
    b"GET " + b"/" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"P",
    b"PRI * HTTP/1.1\r\n\r\n",
])
def test_garbage_does_not_crash(server, payload):
    with socket.create_connection(("127.0.0.1", server.client_port), timeout=5) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(3)
            while s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
    st, _, _ = request(server, "GET", "/health")
    assert st == 200
    assert server.running()


def test_http_over_tls(request, tmp_path):
    """/health over TLS (curl offers http/1.1 and h2 in ALPN)."""
    import ssl
    s = Server(scheme="https", extra_args=["--auto-tls"], label="httptls")
    request.addfinalizer(s.cleanup)
    s.start()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    c = http.client.HTTPSConnection("127.0.0.1", s.client_port, timeout=10, context=ctx)
    c.request("GET", "/health")
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["health"] == "true"
    c.request("POST", "/v3/kv/put", json.dumps({"key": b64("t"), "value": b64("v")}))
    r = c.getresponse()
    assert r.status == 200
    r.read()
    c.close()
