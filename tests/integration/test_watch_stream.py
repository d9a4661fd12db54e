"""Watch streams beyond the plain gRPC client: a client that half-closes
(CloseSend) keeps receiving events, as from etcd; and the JSON gateway's
POST /v3/watch, streamed as etcd's grpc-gateway streams it (one
{"result":...} JSON object per line, chunked). Each behaviour is checked
against real etcd too.

Run:  KETCH_BUILD=build KETCH_BIN=$PWD/build/ketch /usr/bin/python3 -m pytest -q tests/integration/test_watch_stream.py
"""

import base64
import http.client
import json
import queue
import threading

import grpc
import pytest
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc

from harness import ETCD, Server


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
