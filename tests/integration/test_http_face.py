"""The HTTP face beyond plain unary calls, each checked against real etcd:
a Watch client that half-closes (CloseSend) keeps receiving events; the
JSON gateway's streams (POST /v3/watch, /v3/lease/keepalive: chunked, one
{"result":...} per line, as etcd's grpc-gateway) and its other routes
(lock, election); --listen-metrics-urls (/metrics and /health only).

Run:  KETCH_BUILD=build KETCH_BIN=$PWD/build/ketch /usr/bin/python3 -m pytest -q tests/integration/test_http_face.py
"""

import base64
import http.client
import json
import queue
import threading

import grpc
import pytest
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc

from harness import ETCD, Server, free_port_pair


@pytest.fixture(scope="module")
def sut(request):
    s = Server(label="sut")
    request.addfinalizer(s.cleanup)
    s.start()
    return s


@pytest.fixture(scope="module")
def ref(request):
    s = Server(binary=ETCD, tmpfs=True, label="ref")
    request.addfinalizer(s.cleanup)
    s.start()
    return s


def put(server, key, value):
    with grpc.insecure_channel(server.endpoint) as ch:
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=20)


def half_closed_watch(server, key, n_puts):
    """Watches key with a request stream that ends right after the create
    request (half-close), then puts n_puts values: returns what the stream
    delivered (kinds of responses and event values)."""
    ch = grpc.insecure_channel(server.endpoint)
    stub = rpc_pb2_grpc.WatchStub(ch)
    reqs = iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key))])
    responses = stub.Watch(reqs, timeout=60)
    got = []
    try:
        first = next(responses)
        got.append("created" if first.created else "other")
        for i in range(n_puts):
            put(server, key, b"v%d" % i)
        while sum(1 for g in got if g.startswith("v")) < n_puts:
            r = next(responses)
            got.extend(e.kv.value.decode() for e in r.events)
    finally:
        responses.cancel()
        ch.close()
    return got


@pytest.mark.parametrize("which", ["sut", "ref"])
def test_half_closed_watch_keeps_sending(which, request):
    server = request.getfixturevalue(which)
    key = b"hc-" + which.encode()
    assert half_closed_watch(server, key, 3) == ["created", "v0", "v1", "v2"]


def b64(b):
    return base64.b64encode(b).decode()


def strip_ids(obj):
    """The same JSON with the member-specific header IDs and raft term left
    out (they differ between two servers)."""
    if isinstance(obj, dict):
        return {k: strip_ids(v) for k, v in obj.items()
                if k not in ("cluster_id", "member_id", "raft_term", "revision")}
    if isinstance(obj, list):
        return [strip_ids(v) for v in obj]
    return obj


def gateway_watch(server, body, n_lines, after_first=None, after=1):
    """POSTs body to /v3/watch and reads n_lines JSON lines of the streamed
    answer (calling after_first() once `after` lines arrived)."""
    c = http.client.HTTPConnection("127.0.0.1", server.client_port, timeout=30)
    c.request("POST", "/v3/watch", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, (r.status, r.read())
    assert r.getheader("Transfer-Encoding") == "chunked"
    assert r.getheader("Content-Type") == "application/json"
    lines = []
    for i in range(n_lines):
        line = r.readline()
        assert line.endswith(b"\n"), line
        lines.append(json.loads(line))
        if i == after - 1 and after_first:
            after_first()
    c.close()  # the client goes away: the server cancels the stream
    return lines


@pytest.mark.parametrize("which", ["sut", "ref"])
def test_gateway_watch_streams_lines(which, request):
    server = request.getfixturevalue(which)
    key = ("gw-%s" % which).encode()
    body = json.dumps({"create_request": {"key": b64(key), "prev_kv": True}})

    def writes():
        put(server, key, b"one")
        put(server, key, b"two")
    lines = gateway_watch(server, body, 3, after_first=writes)
    got = strip_ids(lines)
    assert got[0] == {"result": {"header": {}, "created": True}}, lines[0]
    ev1 = got[1]["result"]["events"]
    ev2 = got[2]["result"]["events"]
    assert ev1[0]["kv"]["value"] == b64(b"one") and "type" not in ev1[0], lines
    assert ev2[0]["kv"]["value"] == b64(b"two")
    assert ev2[0]["prev_kv"]["value"] == b64(b"one")
    assert lines[2]["result"]["header"]["revision"] == ev2[0]["kv"]["mod_revision"]


def test_gateway_watch_same_as_etcd(sut, ref):
    """Two watchers in one body, a delete: the same lines from both."""
    out = {}
    for name, server in (("sut", sut), ("ref", ref)):
        body = (json.dumps({"create_request": {"key": b64(b"same-a")}}) + "\n" +
                json.dumps({"create_request": {"key": b64(b"same-b"), "watch_id": "7"}}))

        def writes(server=server):
            put(server, b"same-b", b"x")
            with grpc.insecure_channel(server.endpoint) as ch:
                rpc_pb2_grpc.KVStub(ch).DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"same-b"),
                                                    timeout=20)

        # writes once both watchers are created
        lines = gateway_watch(server, body, 4, after_first=writes, after=2)
        out[name] = lines
    # Creation lines first (two), with the same shape.
    assert strip_ids(out["sut"]) == strip_ids(out["ref"]), out


def test_gateway_watch_errors_as_etcd(sut, ref):
    for body in ('{"create_request": {"key": "Zm9v"}', '{"create_request": {"key": 5}}'):
        res = {}
        for name, server in (("sut", sut), ("ref", ref)):
            c = http.client.HTTPConnection("127.0.0.1", server.client_port, timeout=30)
            c.request("POST", "/v3/watch", body=body)
            r = c.getresponse()
            res[name] = (r.status, sorted(json.loads(r.read()).keys()))
            c.close()
        assert res["sut"] == res["ref"], (body, res)
    # GET is not a route.
    c = http.client.HTTPConnection("127.0.0.1", sut.client_port, timeout=30)
    c.request("GET", "/v3/watch")
    assert c.getresponse().status in (404, 405)
    c.close()


def test_gateway_watch_client_leaving_cancels(sut):
    """Many watch streams opened over HTTP and dropped: the server keeps
    serving (and under ASan frees every one of them)."""
    for i in range(20):
        key = b"leave-%d" % i
        c = http.client.HTTPConnection("127.0.0.1", sut.client_port, timeout=30)
        c.request("POST", "/v3/watch", body=json.dumps({"create_request": {"key": b64(key)}}))
        r = c.getresponse()
        assert json.loads(r.readline())["result"]["created"] is True
        c.close()
    put(sut, b"leave-0", b"after")
    with grpc.insecure_channel(sut.endpoint) as ch:
        r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"leave-0"), timeout=20)
        assert r.kvs[0].value == b"after"


def post(server, path, body):
    c = http.client.HTTPConnection("127.0.0.1", server.client_port, timeout=30)
    c.request("POST", path, body=body)
    r = c.getresponse()
    out = (r.status, r.getheader("Transfer-Encoding"), r.read())
    c.close()
    return out


def test_gateway_keepalive_lock_election_as_etcd(sut, ref):
    res = {}
    for name, server in (("sut", sut), ("ref", ref)):
        got = []
        st, _, body = post(server, "/v3/lease/grant", '{"TTL":60,"ID":4242}')
        got.append((st, strip_ids(json.loads(body))))
        # A stream of requests in one body: one result line each.
        st, te, body = post(server, "/v3/lease/keepalive", '{"ID":4242}\n{"ID":"4242"}')
        lines = [json.loads(l) for l in body.splitlines() if l.strip()]
        got.append((st, te, [strip_ids(l) for l in lines]))
        st, _, body = post(server, "/v3/lock/lock",
                           json.dumps({"name": b64(b"gwlock"), "lease": "4242"}))
        j = json.loads(body)
        got.append((st, base64.b64decode(j["key"]).startswith(b"gwlock/")))
        st, _, body = post(server, "/v3/lock/unlock", json.dumps({"key": j["key"]}))
        got.append((st, strip_ids(json.loads(body))))
        st, _, body = post(server, "/v3/election/campaign",
                           json.dumps({"name": b64(b"gwel"), "value": b64(b"v"), "lease": "4242"}))
        j = json.loads(body)
        got.append((st, base64.b64decode(j["leader"]["name"])))
        st, _, body = post(server, "/v3/election/leader", json.dumps({"name": b64(b"gwel")}))
        got.append((st, base64.b64decode(json.loads(body)["kv"]["value"])))
        res[name] = got
    assert res["sut"] == res["ref"], res
    assert res["sut"][1][2] and all("result" in l for l in res["sut"][1][2])


@pytest.mark.parametrize("binary", [None, ETCD])
def test_listen_metrics_urls(binary, request):
    port = free_port_pair()[0]
    s = Server(binary=binary, tmpfs=binary is not None, label="sut" if binary is None else "ref",
               extra_args=["--listen-metrics-urls", "http://127.0.0.1:%d" % port])
    request.addfinalizer(s.cleanup)
    s.start()

    def get(path, method="GET"):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request(method, path)
        r = c.getresponse()
        out = (r.status, r.read())
        c.close()
        return out
    st, body = get("/metrics")
    assert st == 200 and b"etcd_server_has_leader 1" in body, body[:300]
    st, body = get("/health")
    assert st == 200 and json.loads(body)["health"] == "true", body
    assert get("/v3/kv/range", "POST")[0] == 404
    assert get("/version")[0] == 404
