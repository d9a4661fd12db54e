"""ketchctl's Kubernetes view, part 2: typed decoding of the core kinds
(`k8s get -o json|yaml`), encryption at rest (aescbc / aesgcm / secretbox,
kube-apiserver's EncryptionConfiguration), `k8s watch`, the fixture
generator, and `ketchctl migrate` from a live etcd.

Values are checked against independent encoders where one exists: Python's
protobuf runtime (our proto/k8s/k8s.proto compiled with protoc) writes
objects the C decoder must read, and the `cryptography` package encrypts as
kube-apiserver does (AES-CBC with IV prefix and PKCS#7; AES-GCM with nonce
prefix and the etcd key as additional data).

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_k8s.py
"""

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import REPO, ref_etcd, server  # noqa: E402,F401

BUILD = os.environ.get("KETCH_BUILD", "build")
KETCHCTL = os.path.join(REPO, BUILD, "ketchctl") if not os.path.isabs(BUILD) else os.path.join(BUILD, "ketchctl")

if not os.path.exists(KETCHCTL):
    pytest.skip("no ketchctl at %s" % KETCHCTL, allow_module_level=True)


def ctl(srv, *args, timeout=30):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    cmd = [KETCHCTL, "--endpoints=%s" % srv.endpoint, "--command-timeout=5s", "--dial-timeout=3s"] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)
    # bad input never crashes ketchctl (the sanitized build reports here)
    assert "Sanitizer" not in r.stderr and "runtime error:" not in r.stderr, r.stderr
    assert r.returncode in (0, 1, 2, 128), (r.returncode, r.stderr)
    return r


def k8s(srv, *args):
    return ctl(srv, "k8s", *args)


def put_raw(srv, key, value):
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ch = srv.channel()
    rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=5)
    ch.close()


def get_json(srv, *args):
    r = k8s(srv, "get", *args, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def seeded(server):
    r = k8s(server, "seed")
    assert r.returncode == 0 and r.stdout == "seeded 38 keys under /registry/\n", r.stdout + r.stderr
    return server


@pytest.fixture
def test_config(tmp_path):
    r = subprocess.run([KETCHCTL, "k8s", "seed", "--print-test-config"], capture_output=True, text=True)
    assert r.returncode == 0
    p = tmp_path / "enc.yaml"
    p.write_text(r.stdout)
    return str(p), yaml.safe_load(r.stdout)


# ---------------------------------------------------------------------------
# typed decoding of the seeded core kinds


CORE = [
    # resource, name, namespace, apiVersion, kind
    ("namespaces", "web", None, "v1", "Namespace"),
    ("nodes", "node-1", None, "v1", "Node"),
    ("pods", "db-0", "web", "v1", "Pod"),
    ("secrets", "db-password", "default", "v1", "Secret"),
    ("configmaps", "coredns", "kube-system", "v1", "ConfigMap"),
    ("services", "frontend", "web", "v1", "Service"),
    ("endpoints", "frontend", "web", "v1", "Endpoints"),
    ("serviceaccounts", "coredns", "kube-system", "v1", "ServiceAccount"),
    ("deployments", "frontend", "web", "apps/v1", "Deployment"),
    ("replicasets", "frontend-7c9f8d6b5", "web", "apps/v1", "ReplicaSet"),
    ("daemonsets", "kube-proxy", "kube-system", "apps/v1", "DaemonSet"),
    ("statefulsets", "db", "web", "apps/v1", "StatefulSet"),
    ("roles", "extension-apiserver-authentication-reader", "kube-system", "rbac.authorization.k8s.io/v1", "Role"),
    ("rolebindings", "system:controller:bootstrap-signer", "kube-system", "rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("clusterroles", "admin", None, "rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("clusterrolebindings", "cluster-admin", None, "rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("leases", "node-1", "kube-node-lease", "coordination.k8s.io/v1", "Lease"),
    ("events", "frontend-7c9f8d6b5-x2x7q.17a8b2c3d4e5f607", "web", "v1", "Event"),
]


def _mod_revision(srv, res, ns, name):
    path = {"nodes": "minions", "services": "services/specs", "endpoints": "services/endpoints"}.get(res, res)
    key = "/registry/%s/%s%s" % (path, ns + "/" if ns else "", name)
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ch = srv.channel()
    r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=key.encode()), timeout=5)
    ch.close()
    return r.kvs[0].mod_revision


def test_get_json_every_core_kind(seeded):
    for res, name, ns, api, kind in CORE:
        args = [res, name] + (["-n", ns] if ns else [])
        o = get_json(seeded, *args)
        # kubectl's order: apiVersion, kind, metadata first
        assert list(o)[:3] == ["apiVersion", "kind", "metadata"], (res, list(o))
        assert o["apiVersion"] == api and o["kind"] == kind, (res, o["apiVersion"], o["kind"])
        assert o["metadata"]["name"] == name
        assert o["metadata"].get("namespace") == ns
        assert o["metadata"]["creationTimestamp"].endswith("Z")
        # as kube-apiserver shows it: the key's mod_revision
        assert o["metadata"]["resourceVersion"] == str(_mod_revision(seeded, res, ns, name)), res
        assert list(o["metadata"]).index("resourceVersion") == list(o["metadata"]).index("uid") + 1


def test_get_json_fields(seeded):
    d = get_json(seeded, "deployments", "frontend", "-n", "web")
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"] == {"matchLabels": {"app": "frontend"}}
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "nginx:1.25" and c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["resources"] == {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8080, "scheme": "HTTP"}  # inlined handler
    assert c["env"][1] == {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "password"}}}
    assert d["spec"]["template"]["metadata"]["creationTimestamp"] is None  # a zero metav1.Time is null
    assert d["spec"]["template"]["spec"]["securityContext"] == {}  # present but empty
    assert d["spec"]["template"]["spec"]["priority"] == 0  # a pointer field set to 0 is shown
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": "25%"}  # IntOrString
    assert d["status"]["conditions"][0]["lastUpdateTime"] == "2024-01-01T10:01:00Z"
    assert d["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "1"}

    s = get_json(seeded, "secrets", "db-password", "-n", "default")
    assert s["data"] == {"password": base64.b64encode(b"s3cr3t").decode()} and s["type"] == "Opaque"

    p = get_json(seeded, "pods", "frontend-7c9f8d6b5-x2x7q", "-n", "web")
    assert p["spec"]["nodeName"] == "node-1" and p["status"]["phase"] == "Running"
    assert p["metadata"]["ownerReferences"][0]["controller"] is True
    assert list(p["metadata"]["ownerReferences"][0]) == ["apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion"]
    assert list(p["spec"]["containers"][0])[:8] == ["name", "image", "args", "ports", "env", "resources", "volumeMounts", "livenessProbe"]
    assert p["status"]["containerStatuses"][0]["state"] == {"running": {"startedAt": "2024-01-01T10:01:30Z"}}
    assert p["status"]["containerStatuses"][0]["restartCount"] == 0  # required field, shown at 0
    assert p["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["path"] == "token"  # inlined volumeSource

    n = get_json(seeded, "nodes", "node-2")
    assert n["status"]["nodeInfo"]["kubeletVersion"] == "v1.29.2"
    assert n["status"]["capacity"]["pods"] == "110"  # Quantity
    assert n["status"]["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}

    svc = get_json(seeded, "services", "kubernetes", "-n", "default")
    assert svc["spec"]["ports"][0]["targetPort"] == 6443
    assert get_json(seeded, "services", "frontend", "-n", "web")["spec"]["ports"][0]["targetPort"] == "http"

    lease = get_json(seeded, "leases", "node-1", "-n", "kube-node-lease")
    assert lease["spec"]["renewTime"] == "2024-03-01T12:00:00.654321Z"  # MicroTime

    rb = get_json(seeded, "clusterrolebindings", "cluster-admin")
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}
    assert rb["subjects"] == [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:masters"}]

    ev = get_json(seeded, "events", "frontend-7c9f8d6b5-x2x7q.17a8b2c3d4e5f607", "-n", "web")
    assert ev["involvedObject"]["fieldPath"] == "spec.containers{frontend}" and ev["eventTime"] is None

    cr = get_json(seeded, "controllerrevisions", "kube-proxy-5d8c7f9b4", "-n", "kube-system")
    assert cr["data"] == {"spec": {"template": {"$patch": "replace"}}} and cr["revision"] == 1  # RawExtension

    # JSON values (API services, custom resources) come out as stored
    a = get_json(seeded, "apiservices", "v1.apps")
    assert a["kind"] == "APIService" and a["spec"]["groupPriorityMinimum"] == 17800


def test_get_yaml(seeded):
    for res, name, ns, _, _ in CORE:
        args = [res, name] + (["-n", ns] if ns else [])
        y = k8s(seeded, "get", *args, "-o", "yaml")
        assert y.returncode == 0, y.stderr
        # the YAML is the same object as the JSON
        assert yaml.safe_load(y.stdout) == get_json(seeded, *args), res
    y = k8s(seeded, "get", "configmaps", "coredns", "-n", "kube-system", "-o", "yaml").stdout
    # keys sorted as kubectl's YAML printer, multi-line strings as literal blocks
    assert y.startswith("apiVersion: v1\ndata:\n  config.yaml: |\n    log-level: info\n    replicas: 2\n  mode: production\nkind: ConfigMap\n")
    y = k8s(seeded, "get", "deployments", "coredns", "-n", "kube-system", "-o", "yaml").stdout
    assert '    status: "True"\n' in y and "  creationTimestamp: \"2024-" in y
    assert "      containers:\n      - args:\n        - --port=8080\n" in y  # go-yaml's sequence style
    r = k8s(seeded, "get", "pods", "db-0", "-n", "web", "-o", "wide")
    assert r.returncode != 0 and 'output format "wide"' in r.stderr


def _compile_proto(tmp):
    subprocess.run(["protoc", "-I", os.path.join(REPO, "proto", "k8s"), "--python_out", tmp,
                    os.path.join(REPO, "proto", "k8s", "k8s.proto")], check=True)
    sys.path.insert(0, tmp)
    import k8s_pb2
    return k8s_pb2


def test_decode_objects_from_an_independent_encoder(server, tmp_path):
    """Python's protobuf runtime writes a Pod and a Secret as kube-apiserver
    does (gogo writes every non-pointer field, empty strings and zero ints
    included); the C decoder reads them back field for field."""
    pb = _compile_proto(str(tmp_path))
    pod = pb.Pod()
    m = pod.metadata
    m.name, m.generateName, m.namespace, m.uid, m.resourceVersion = "p1", "", "ns1", "u-1", ""
    m.generation = 0
    m.creationTimestamp.seconds = 1700000000
    m.labels["app"] = "x"
    m.labels["tier"] = "be"
    c = pod.spec.containers.add()
    c.name, c.image, c.workingDir = "main", "busybox", ""
    c.command.extend(["sh", "-c", "sleep 1"])
    c.readinessProbe.handler.tcpSocket.port.type = 1
    c.readinessProbe.handler.tcpSocket.port.strVal = "web"
    c.readinessProbe.initialDelaySeconds = 0
    c.stdin = False
    pod.spec.restartPolicy = "Never"
    pod.spec.hostNetwork = True
    v = pod.spec.volumes.add()
    v.name = "cfg"
    v.volumeSource.configMap.localObjectReference.name = "app-config"
    v.volumeSource.configMap.defaultMode = 420
    pod.status.phase = "Pending"
    pod.status.startTime.seconds = 1700000100
    u = pb.Unknown()
    u.typeMeta.apiVersion, u.typeMeta.kind = "v1", "Pod"
    u.raw = pod.SerializeToString()
    u.contentEncoding, u.contentType = "", ""
    put_raw(server, b"/registry/pods/ns1/p1", b"k8s\x00" + u.SerializeToString())
    o = get_json(server, "pods", "p1", "-n", "ns1")
    assert o == {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p1", "namespace": "ns1", "uid": "u-1",
                     "resourceVersion": str(_mod_revision(server, "pods", "ns1", "p1")),
                     "creationTimestamp": "2023-11-14T22:13:20Z", "labels": {"app": "x", "tier": "be"}},
        "spec": {"volumes": [{"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 420}}],
                 "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "sleep 1"],
                                 "readinessProbe": {"tcpSocket": {"port": "web"}}}],
                 "restartPolicy": "Never", "hostNetwork": True},
        "status": {"phase": "Pending", "startTime": "2023-11-14T22:15:00Z"},
    }
    # kubectl's key order (Go struct order, not field numbers)
    r = k8s(server, "get", "pods", "p1", "-n", "ns1", "-o", "json")
    assert r.stdout.index('"restartPolicy"') < r.stdout.index('"hostNetwork"')
    # a field newer than our schema (PodSpec.os = 36): the rest decodes, a warning says what was left out
    pod.spec.MergeFromString(b"\xa2\x02\x07\x0a\x05linux")
    u.raw = pod.SerializeToString()
    put_raw(server, b"/registry/pods/ns1/p2", b"k8s\x00" + u.SerializeToString())
    r = k8s(server, "get", "pods", "p2", "-n", "ns1", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["spec"]["restartPolicy"] == "Never"
    assert r.stderr == "warning: v1 Pod: 1 fields not in ketchctl's schema are not shown (message.field number: PodSpec.36)\n", r.stderr

    # long strings fold past column 80 in YAML as go-yaml does; JSON escapes HTML as Go does
    cm = pb.ConfigMap()
    cm.metadata.name, cm.metadata.namespace = "long", "ns1"
    long_text = " ".join("word%02d" % i for i in range(30))
    cm.data["long"] = long_text
    cm.data["quoted"] = "*" + long_text
    cm.data["html"] = "<b>&</b>"
    u3 = pb.Unknown()
    u3.typeMeta.apiVersion, u3.typeMeta.kind = "v1", "ConfigMap"
    u3.raw = cm.SerializeToString()
    put_raw(server, b"/registry/configmaps/ns1/long", b"k8s\x00" + u3.SerializeToString())
    y = k8s(server, "get", "configmaps", "long", "-n", "ns1", "-o", "yaml").stdout
    assert ("  long: word00 word01 word02 word03 word04 word05 word06 word07 word08 word09 word10\n"
            "    word11 word12") in y, y
    assert "  quoted: '*word00 word01" in y
    assert yaml.safe_load(y)["data"] == {"long": long_text, "quoted": "*" + long_text, "html": "<b>&</b>"}
    j = k8s(server, "get", "configmaps", "long", "-n", "ns1", "-o", "json").stdout
    assert '"html": "\\u003cb\\u003e\\u0026\\u003c/b\\u003e"' in j, j

    # discovery.k8s.io/v1 EndpointSlice (its own Endpoint and EndpointPort field numbers)
    es = pb.EndpointSlice()
    es.metadata.name, es.metadata.namespace = "web-abc12", "ns1"
    es.metadata.labels["kubernetes.io/service-name"] = "web"
    es.addressType = "IPv4"
    ep = es.endpoints.add()
    ep.addresses.append("10.244.1.7")
    ep.conditions.ready, ep.conditions.serving, ep.conditions.terminating = True, True, False
    ep.nodeName, ep.zone = "node-1", "z1"
    prt = es.ports.add()
    prt.name, prt.protocol, prt.port = "http", "TCP", 8080
    u4 = pb.Unknown()
    u4.typeMeta.apiVersion, u4.typeMeta.kind = "discovery.k8s.io/v1", "EndpointSlice"
    u4.raw = es.SerializeToString()
    put_raw(server, b"/registry/endpointslices/ns1/web-abc12", b"k8s\x00" + u4.SerializeToString())
    o = get_json(server, "endpointslices", "web-abc12", "-n", "ns1")
    assert list(o) == ["apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"]
    assert o["endpoints"] == [{"addresses": ["10.244.1.7"], "conditions": {"ready": True, "serving": True, "terminating": False},
                               "nodeName": "node-1", "zone": "z1"}]
    assert o["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]

    # batch/v1 CronJob, with its nested Job and Pod templates
    cj = pb.CronJob()
    cj.metadata.name, cj.metadata.namespace = "backup", "ns1"
    cj.spec.schedule, cj.spec.concurrencyPolicy = "0 3 * * *", "Forbid"
    cj.spec.successfulJobsHistoryLimit = 0
    jt = cj.spec.jobTemplate.spec
    jt.backoffLimit = 2
    jc = jt.template.spec.containers.add()
    jc.name, jc.image = "dump", "postgres:16"
    jt.template.spec.restartPolicy = "OnFailure"
    cj.status.lastScheduleTime.seconds = 1700003600
    u2 = pb.Unknown()
    u2.typeMeta.apiVersion, u2.typeMeta.kind = "batch/v1", "CronJob"
    u2.raw = cj.SerializeToString()
    put_raw(server, b"/registry/cronjobs/ns1/backup", b"k8s\x00" + u2.SerializeToString())
    o = get_json(server, "cronjobs", "backup", "-n", "ns1")
    assert o["spec"] == {"schedule": "0 3 * * *", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 0,
                         "jobTemplate": {"spec": {"backoffLimit": 2, "template": {"spec": {
                             "containers": [{"name": "dump", "image": "postgres:16"}], "restartPolicy": "OnFailure"}}}}}
    assert o["status"] == {"lastScheduleTime": "2023-11-14T23:13:20Z"}

    sec = pb.Secret()
    sec.metadata.name, sec.metadata.namespace = "s1", "ns1"
    sec.data["bin"] = bytes(range(256))
    sec.type = "Opaque"
    u = pb.Unknown()
    u.typeMeta.apiVersion, u.typeMeta.kind = "v1", "Secret"
    u.raw = sec.SerializeToString()
    put_raw(server, b"/registry/secrets/ns1/s1", b"k8s\x00" + u.SerializeToString())
    o = get_json(server, "secrets", "s1", "-n", "ns1")
    assert base64.b64decode(o["data"]["bin"]) == bytes(range(256))


def test_seed_values_decode_with_an_independent_decoder(seeded, tmp_path):
    """The fixture generator's values are what kube-apiserver writes: the
    envelope and the object parse with Python's protobuf runtime."""
    pb = _compile_proto(str(tmp_path))
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ch = seeded.channel()
    r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"/registry/deployments/web/frontend"), timeout=5)
    ch.close()
    v = r.kvs[0].value
    assert v[:4] == b"k8s\x00"
    u = pb.Unknown()
    u.ParseFromString(v[4:])
    assert (u.typeMeta.apiVersion, u.typeMeta.kind) == ("apps/v1", "Deployment")
    d = pb.Deployment()
    d.ParseFromString(u.raw)
    assert d.metadata.name == "frontend" and d.spec.replicas == 2
    assert d.spec.template.spec.containers[0].livenessProbe.handler.httpGet.port.intVal == 8080
    assert d.spec.strategy.rollingUpdate.maxSurge.strVal == "25%"


# ---------------------------------------------------------------------------
# edge cases


def test_decode_edge_cases(server):
    # truncated object inside a well-formed envelope: clear error, exit 1
    put_raw(server, b"/registry/pods/ns1/trunc",
            b"k8s\x00\x0a\x09\x0a\x02v1\x12\x03Pod\x12\x05\x0a\x10\x0a\x03a")
    r = k8s(server, "get", "pods", "trunc", "-n", "ns1", "-o", "json")
    assert r.returncode == 1 and "truncated or malformed object" in r.stderr, r.stderr
    # truncated envelope
    put_raw(server, b"/registry/pods/ns1/trunc2", b"k8s\x00\x0a\x09\x0a\x02v1\x12\x03Pod\x12\xc8\x01\x0a")
    r = k8s(server, "get", "pods", "trunc2", "-n", "ns1", "-o", "yaml")
    assert r.returncode == 1 and "truncated or malformed" in r.stderr
    # magic only, and an empty value
    put_raw(server, b"/registry/pods/ns1/magic", b"k8s\x00")
    r = k8s(server, "get", "pods", "magic", "-n", "ns1", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"apiVersion": "", "kind": ""}
    put_raw(server, b"/registry/pods/ns1/empty", b"")
    r = k8s(server, "get", "pods", "empty", "-n", "ns1", "-o", "json")
    assert r.returncode == 1 and "neither Kubernetes protobuf nor JSON" in r.stderr
    # unknown kind: generic field dump keyed by field number
    put_raw(server, b"/registry/widgets/ns1/w1",
            b"k8s\x00\x0a\x15\x0a\x0ewidgets.io/v9z\x12\x03Wid\x12\x0c\x08\x01\x10\x02\x1a\x06\x0a\x04name")
    o = json.loads(k8s(server, "get", "widgets", "w1", "-n", "ns1", "-o", "json").stdout)
    assert o == {"apiVersion": "widgets.io/v9z", "kind": "Wid", "protobuf": {"1": 1, "2": 2, "3": {"1": "name"}}}
    # a known kind's fields that do not match the schema (wire type clash): its raw fields, and a warning
    put_raw(server, b"/registry/pods/ns1/clash", b"k8s\x00\x0a\x09\x0a\x02v1\x12\x03Pod\x12\x02\x08\x05")
    r = k8s(server, "get", "pods", "clash", "-n", "ns1", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["protobuf"] == {"1": 5}
    assert r.stderr == "warning: v1 Pod: the object does not match ketchctl's schema; showing its protobuf fields\n"
    # invalid JSON for a custom resource
    put_raw(server, b"/registry/example.com/things/ns1/t1", b"{\"apiVersion\": ")
    r = k8s(server, "get", "things", "t1", "-n", "ns1", "-o", "json")
    assert r.returncode == 1 and "invalid JSON" in r.stderr
    # random bytes never crash the decoder
    import random
    rnd = random.Random(7)
    for i in range(40):
        body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 60)))
        put_raw(server, b"/registry/pods/fz/p%d" % i, b"k8s\x00\x0a\x09\x0a\x02v1\x12\x03Pod\x12" + bytes([len(body)]) + body)
    for i in range(40):
        r = k8s(server, "get", "pods", "p%d" % i, "-n", "fz", "-o", "json")
        assert r.returncode in (0, 1), r.stderr
        assert r.returncode == 1 or r.stderr == "" or r.stderr.startswith("warning: v1 Pod: "), r.stderr
        assert r.returncode == 0 or r.stderr.startswith("Error: /registry/pods/fz/"), r.stderr
    # and the generic dump, in every output format, for an unknown kind
    for i in range(25):
        body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 80)))
        put_raw(server, b"/registry/gizmos/fz/g%d" % i,
                b"k8s\x00\x0a\x0c\x0a\x02x1\x12\x06Gizmo_\x12" + bytes([len(body)]) + body)
        for fmt in (["-o", "json"], ["-o", "yaml"], []):
            r = k8s(server, "get", "gizmos", "g%d" % i, "-n", "fz", *fmt)
            assert r.returncode in (0, 1), r.stderr


# ---------------------------------------------------------------------------
# encryption at rest


def _config(tmp_path, providers):
    cfg = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
           "resources": [{"resources": ["secrets"], "providers": providers + [{"identity": {}}]}]}
    p = tmp_path / ("enc-%d.yaml" % len(os.listdir(tmp_path)))
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def _secret_value(name, ns, password=b"hunter2"):
    """A Secret as kube-apiserver's protobuf encoding (hand-made)."""
    def ld(f, b):
        return bytes([f << 3 | 2, len(b)]) + b
    meta = ld(1, name.encode()) + ld(3, ns.encode())
    entry = ld(1, b"password") + ld(2, password)
    obj = ld(1, meta) + ld(2, entry) + ld(3, b"Opaque")
    env = ld(1, ld(1, b"v1") + ld(2, b"Secret")) + ld(2, obj) + ld(3, b"") + ld(4, b"")
    return b"k8s\x00" + env


def test_decrypt_seeded_secrets(seeded, test_config):
    path, cfg = test_config
    r = k8s(seeded, "get", "secrets", "tls-cert", "-n", "web", "-o", "json")
    assert r.returncode == 1 and 'encrypted with aescbc key "key1": give --encryption-config' in r.stderr
    o = get_json(seeded, "secrets", "tls-cert", "-n", "web", "--encryption-config", path)
    assert o["type"] == "kubernetes.io/tls" and base64.b64decode(o["data"]["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE")
    o = get_json(seeded, "secrets", "bootstrap-token-abcdef", "-n", "kube-system", "--encryption-config", path)
    assert base64.b64decode(o["data"]["token-id"]) == b"abcdef"
    # the text view shows the provider, then the decrypted value
    r = k8s(seeded, "get", "secrets", "bootstrap-token-abcdef", "-n", "kube-system", "--encryption-config", path)
    assert r.stdout.startswith("encrypted: secretbox-v1:key2\n") and "kind: Secret\n" in r.stdout
    # audit: plain vs encrypted, and whether each decrypts
    r = k8s(seeded, "secrets", "--audit", "--encryption-config", path)
    rows = [l.split() for l in r.stdout.splitlines()]
    assert ["default", "db-password", "plain", "protobuf", "-", "-"] in rows
    assert ["web", "tls-cert", "encrypted", "aescbc-v1", "key1", "yes"] in rows
    assert ["kube-system", "bootstrap-token-abcdef", "encrypted", "secretbox-v1", "key2", "yes"] in rows
    assert "3 secrets: 1 plain, 2 encrypted" in r.stdout and "WARNING: 1 secrets are stored in plain text" in r.stdout


def test_decrypt_independent_aescbc_aesgcm(server, tmp_path):
    """Values encrypted by Python's cryptography package, in kube-apiserver's
    formats, decrypt; the wrong key, a corrupted value, a truncated one and
    a value moved to another key fail with a clear error."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    k_cbc, k_gcm, k_gcm16 = os.urandom(32), os.urandom(32), os.urandom(16)
    path = _config(tmp_path, [
        {"aesgcm": {"keys": [{"name": "g1", "secret": base64.b64encode(k_gcm).decode()},
                             {"name": "g2", "secret": base64.b64encode(k_gcm16).decode()}]}},
        {"aescbc": {"keys": [{"name": "c1", "secret": base64.b64encode(k_cbc).decode()}]}},
    ])

    def cbc(plain):
        iv = os.urandom(16)
        p = padding.PKCS7(128).padder()
        e = Cipher(algorithms.AES(k_cbc), modes.CBC(iv)).encryptor()
        return b"k8s:enc:aescbc:v1:c1:" + iv + e.update(p.update(plain) + p.finalize()) + e.finalize()

    def gcm(key, name, plain, etcd_key):
        nonce = os.urandom(12)
        return b"k8s:enc:aesgcm:v1:" + name + b":" + nonce + AESGCM(key).encrypt(nonce, plain, etcd_key)

    put_raw(server, b"/registry/secrets/ns1/cbc", cbc(_secret_value("cbc", "ns1", b"pw-cbc")))
    put_raw(server, b"/registry/secrets/ns1/gcm", gcm(k_gcm, b"g1", _secret_value("gcm", "ns1", b"pw-gcm"), b"/registry/secrets/ns1/gcm"))
    put_raw(server, b"/registry/secrets/ns1/gcm16", gcm(k_gcm16, b"g2", _secret_value("gcm16", "ns1"), b"/registry/secrets/ns1/gcm16"))
    for name, pw in [("cbc", b"pw-cbc"), ("gcm", b"pw-gcm"), ("gcm16", b"hunter2")]:
        o = get_json(server, "secrets", name, "-n", "ns1", "--encryption-config", path)
        assert base64.b64decode(o["data"]["password"]) == pw, name
    # GCM authenticates the etcd key: the same ciphertext under another key fails
    moved = gcm(k_gcm, b"g1", _secret_value("x", "ns1"), b"/registry/secrets/ns1/elsewhere")
    put_raw(server, b"/registry/secrets/ns1/moved", moved)
    r = k8s(server, "get", "secrets", "moved", "-n", "ns1", "--encryption-config", path, "-o", "json")
    assert r.returncode == 1 and 'aesgcm key "g1": decryption failed (wrong key or corrupted value)' in r.stderr
    # wrong key: a config with other secrets under the same names
    wrong = _config(tmp_path, [
        {"aesgcm": {"keys": [{"name": "g1", "secret": base64.b64encode(os.urandom(32)).decode()}]}},
        {"aescbc": {"keys": [{"name": "c1", "secret": base64.b64encode(os.urandom(32)).decode()}]}},
    ])
    for name, prov in [("cbc", "aescbc"), ("gcm", "aesgcm")]:
        r = k8s(server, "get", "secrets", name, "-n", "ns1", "--encryption-config", wrong, "-o", "yaml")
        assert r.returncode == 1 and "%s key" % prov in r.stderr and "decryption failed" in r.stderr, r.stderr
    # corrupted and truncated ciphertexts
    good = cbc(_secret_value("c", "ns1"))
    bad = bytearray(good)
    bad[-3] ^= 0x55
    put_raw(server, b"/registry/secrets/ns1/corrupt", bytes(bad))
    put_raw(server, b"/registry/secrets/ns1/short", good[:len(b"k8s:enc:aescbc:v1:c1:") + 20])
    put_raw(server, b"/registry/secrets/ns1/nokey", b"k8s:enc:aescbc:v1:c9:" + good[-32:])
    r = k8s(server, "get", "secrets", "corrupt", "-n", "ns1", "--encryption-config", path, "-o", "json")
    assert r.returncode == 1 and "decryption failed" in r.stderr
    r = k8s(server, "get", "secrets", "short", "-n", "ns1", "--encryption-config", path, "-o", "json")
    assert r.returncode == 1 and "truncated" in r.stderr
    r = k8s(server, "get", "secrets", "nokey", "-n", "ns1", "--encryption-config", path, "-o", "json")
    assert r.returncode == 1 and 'no aescbc key "c9" in the encryption configuration' in r.stderr
    put_raw(server, b"/registry/secrets/ns1/kms", b"k8s:enc:kms:v2:vault:\x0a\x03abc")
    r = k8s(server, "get", "secrets", "kms", "-n", "ns1", "--encryption-config", path, "-o", "json")
    assert r.returncode == 1 and "kms-v2: only the KMS plugin can decrypt this value" in r.stderr
    # the audit reports which ones decrypt
    r = k8s(server, "secrets", "--audit", "--encryption-config", path)
    rows = {l.split()[1]: l for l in r.stdout.splitlines()[1:] if l.strip() and l.split()[0] == "ns1"}
    assert rows["cbc"].rstrip().endswith("yes") and rows["gcm16"].rstrip().endswith("yes")
    assert "no: " in rows["corrupt"] and "no: " in rows["moved"] and "no: " in rows["kms"]


def test_seed_with_a_given_config_and_bad_configs(server, tmp_path):
    key = os.urandom(32)
    path = _config(tmp_path, [{"aesgcm": {"keys": [{"name": "mine", "secret": base64.b64encode(key).decode()}]}}])
    r = k8s(server, "seed", "--encryption-config", path)
    assert r.returncode == 0
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    ch = server.channel()
    kv = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"/registry/secrets/web/tls-cert"), timeout=5).kvs[0]
    ch.close()
    pfx = b"k8s:enc:aesgcm:v1:mine:"
    assert kv.value.startswith(pfx)
    body = kv.value[len(pfx):]
    plain = AESGCM(key).decrypt(body[:12], body[12:], kv.key)  # as kube-apiserver would read it
    assert plain.startswith(b"k8s\x00") and b"kubernetes.io/tls" in plain
    # bad configuration files: a clear error, no crash
    for text, msg in [("resources: [", "not a valid YAML file"),
                      ("kind: Other\n", "not an EncryptionConfiguration"),
                      ("resources:\n- providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: c2hvcnQ=\n",
                       "the secret must be base64 of 16, 24 or 32 bytes")]:
        p = tmp_path / "bad.yaml"
        p.write_text(text)
        r = k8s(server, "secrets", "--encryption-config", str(p))
        assert r.returncode == 1 and msg in r.stderr, r.stderr
    r = k8s(server, "secrets", "--encryption-config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and "cannot read the encryption configuration" in r.stderr


# ---------------------------------------------------------------------------
# watch


def _revision(srv):
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ch = srv.channel()
    r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"x"), timeout=5)
    ch.close()
    return r.header.revision


def _read_lines(proc, n, out):
    for line in proc.stdout:
        out.append(line.rstrip("\n"))
        if len(out) >= n:
            return


def test_watch(seeded):
    rev = _revision(seeded)
    pod = b"k8s\x00\x0a\x09\x0a\x02v1\x12\x03Pod"
    put_raw(seeded, b"/registry/pods/web/new-pod", pod)
    put_raw(seeded, b"/registry/configmaps/web/cm", pod)  # filtered out (not pods)
    put_raw(seeded, b"/registry/pods/other/p", pod)  # filtered out (namespace)
    put_raw(seeded, b"/registry/pods/web/new-pod", pod + b"\x12\x00")
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ch = seeded.channel()
    rpc_pb2_grpc.KVStub(ch).DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/registry/pods/web/db-0"), timeout=5)
    ch.close()
    p = subprocess.Popen([KETCHCTL, "--endpoints=%s" % seeded.endpoint, "k8s", "watch", "pods", "-n", "web",
                          "--rev=%d" % (rev + 1)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    t = threading.Thread(target=_read_lines, args=(p, 3, lines), daemon=True)
    t.start()
    t.join(20)
    p.terminate()
    p.wait(10)
    got = [l.split() for l in lines]
    assert got == [["ADDED", "pods", "web/new-pod", "rev=%d" % (rev + 1)],
                   ["MODIFIED", "pods", "web/new-pod", "rev=%d" % (rev + 4)],
                   ["DELETED", "pods", "web/db-0", "rev=%d" % (rev + 5)]], lines
    # -o json: one event object per line; DELETED carries the last version
    p = subprocess.Popen([KETCHCTL, "--endpoints=%s" % seeded.endpoint, "k8s", "watch", "pods", "-n", "web",
                          "--rev=%d" % (rev + 1), "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    t = threading.Thread(target=_read_lines, args=(p, 3, lines), daemon=True)
    t.start()
    t.join(20)
    p.terminate()
    p.wait(10)
    evs = [json.loads(l) for l in lines]
    assert [e["type"] for e in evs] == ["ADDED", "MODIFIED", "DELETED"]
    assert evs[0]["object"] == {"apiVersion": "v1", "kind": "Pod"}
    assert evs[2]["object"]["metadata"]["name"] == "db-0" and evs[2]["object"]["status"]["phase"] == "Running"
    # every resource: group-qualified names
    p = subprocess.Popen([KETCHCTL, "--endpoints=%s" % seeded.endpoint, "k8s", "watch", "--rev=1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    t = threading.Thread(target=_read_lines, args=(p, 38, lines), daemon=True)
    t.start()
    t.join(20)
    p.terminate()
    p.wait(10)
    res = {l.split()[1] for l in lines}
    assert {"deployments.apps", "leases.coordination.k8s.io", "nodes", "crontabs.stable.example.com"} <= res


# ---------------------------------------------------------------------------
# migrate from a live etcd


def test_migrate_from_real_etcd(server, ref_etcd):
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ech = ref_etcd.channel()
    ekv, elease = rpc_pb2_grpc.KVStub(ech), rpc_pb2_grpc.LeaseStub(ech)
    for i in range(1200):  # more than one page of the copy
        ekv.Put(rpc_pb2.PutRequest(key=b"/app/k%04d" % i, value=b"v%d" % i), timeout=5)
    ekv.Put(rpc_pb2.PutRequest(key=b"/app/bin", value=bytes(range(256))), timeout=5)
    lid = elease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600), timeout=5).ID
    ekv.Put(rpc_pb2.PutRequest(key=b"/app/leased", value=b"l", lease=lid), timeout=5)
    ekv.Put(rpc_pb2.PutRequest(key=b"/other/x", value=b"not copied with --prefix"), timeout=5)

    p = subprocess.Popen([KETCHCTL, "--endpoints=%s" % server.endpoint, "migrate", "--from", ref_etcd.endpoint,
                          "--prefix", "/app/"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    try:
        for line in p.stdout:  # wait for the copy to finish and the follow to start
            out.append(line)
            if line.startswith("migrate: following ") and "Ctrl-C" in line:
                break
        assert any("migrate: copied: 1202 keys copied" in l and "1 leases" in l for l in out), out
        # writes during the follow arrive too, in order
        ekv.Put(rpc_pb2.PutRequest(key=b"/app/during", value=b"1"), timeout=5)
        ekv.Put(rpc_pb2.PutRequest(key=b"/app/during", value=b"2"), timeout=5)
        ekv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"/app/k0000"), timeout=5)
        lid2 = elease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=300), timeout=5).ID
        ekv.Put(rpc_pb2.PutRequest(key=b"/app/leased2", value=b"l2", lease=lid2), timeout=5)
        ekv.Put(rpc_pb2.PutRequest(key=b"/other/y", value=b"outside the prefix"), timeout=5)
        # a burst of puts and deletes over few keys: the last write of each key wins on both sides
        import random
        rnd = random.Random(3)
        for i in range(400):
            k = b"/app/hot%02d" % rnd.randrange(20)
            if rnd.random() < 0.25:
                ekv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=k), timeout=5)
            else:
                ekv.Put(rpc_pb2.PutRequest(key=k, value=b"%d" % i), timeout=5)
        ekv.Put(rpc_pb2.PutRequest(key=b"/app/last", value=b"end"), timeout=5)
        sch = server.channel()
        skv = rpc_pb2_grpc.KVStub(sch)
        import time
        give_up = time.monotonic() + 60  # a bound on waiting, not a timing check
        while not skv.Range(rpc_pb2.RangeRequest(key=b"/app/last"), timeout=5).kvs:
            assert time.monotonic() < give_up, "the follow never delivered /app/last"
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert "migrate: stopped: 1202 keys copied" in rest, rest

    def all_kvs(ch):
        r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00"), timeout=10)
        return {kv.key: (kv.value, kv.lease) for kv in r.kvs}
    src = {k: v for k, v in all_kvs(ech).items() if k.startswith(b"/app/")}
    dst = all_kvs(sch)
    assert {k: v[0] for k, v in dst.items()} == {k: v[0] for k, v in src.items()}
    assert dst[b"/app/during"][0] == b"2" and b"/app/k0000" not in dst
    # leases re-created with the same IDs and their remaining TTL
    assert dst[b"/app/leased"][1] == lid and dst[b"/app/leased2"][1] == lid2
    slease = rpc_pb2_grpc.LeaseStub(sch)
    ttl = slease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lid, keys=True), timeout=5)
    assert 0 < ttl.TTL <= 600 and ttl.keys == [b"/app/leased"]
    sch.close()
    ech.close()


def test_migrate_bad_arguments(server):
    r = ctl(server, "migrate")
    assert r.returncode == 128 and "migrate needs --from" in r.stderr
    r = ctl(server, "--command-timeout=2s", "migrate", "--from", "127.0.0.1:1")
    assert r.returncode == 2 and "migrate: 127.0.0.1:1:" in r.stderr


def test_yaml_and_json_printers_round_trip(server):
    """Random JSON values (stored as a custom resource is) printed with -o
    yaml and -o json parse back to the same value: quoting, block scalars,
    folding and nesting are right."""
    import random
    rnd = random.Random(11)
    tricky = ["yes", "no", "on", "off", "True", "null", "~", "", " lead", "trail ", "a: b", "#x", "x #y",
              "- x", "-x", "key: with colon", "multi\nline", "multi\nline\n", "two\n\n", "\n", "\nlead", "\ttab",
              "unicodé ☃", "'quote'", '"dq"', "@at", "`bt", "%pct", "!bang", "&amp", "*star", "|pipe", ">gt",
              "[x]", "{x}", ",comma", "?q", "1.5", "0x1F", "0o17", "1e3", "123", "-7", "+3", "2024-01-01",
              "2024-01-01T10:00:00Z", ".inf", "<b>&", "line\r\nwin", "a\u2028b", "x:", "x: ", "é:", " ", "  x  ",
              "a  b", "-- ", "---", "\n lead", "\ufeffbom", "nel\x85x", " ".join(["long"] * 40), "w " * 50, "ends with space " * 8]

    def val(depth):
        r = rnd.random()
        if depth > 3 or r < 0.45:
            c = rnd.random()
            if c < 0.6:
                return rnd.choice(tricky)
            if c < 0.75:
                return rnd.randrange(-10**12, 10**12)
            if c < 0.85:
                return rnd.choice([True, False, None])
            return "".join(rnd.choice("ab :#-\n'\"") for _ in range(rnd.randrange(0, 12)))
        if r < 0.75:
            return {rnd.choice(tricky + ["k%d" % i for i in range(5)]): val(depth + 1) for _ in range(rnd.randrange(0, 5))}
        return [val(depth + 1) for _ in range(rnd.randrange(0, 4))]

    for i in range(60):
        obj = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t%d" % i}, "spec": val(0)}
        put_raw(server, b"/registry/example.com/things/t%d" % i, json.dumps(obj).encode())
        y = k8s(server, "get", "things", "t%d" % i, "-o", "yaml")
        assert y.returncode == 0, y.stderr
        back = yaml.safe_load(y.stdout)
        obj["metadata"]["resourceVersion"] = back["metadata"]["resourceVersion"]
        assert back == obj, (obj, y.stdout)
        j = k8s(server, "get", "things", "t%d" % i, "-o", "json")
        assert json.loads(j.stdout) == obj


def test_migrate_dest_prefix_and_source_loss(server, ref_etcd):
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ech = ref_etcd.channel()
    ekv = rpc_pb2_grpc.KVStub(ech)
    for i in range(10):
        ekv.Put(rpc_pb2.PutRequest(key=b"/src/k%d" % i, value=b"%d" % i), timeout=5)
    ekv.Put(rpc_pb2.PutRequest(key=b"/srcx", value=b"not under /src/"), timeout=5)
    ech.close()
    r = ctl(server, "migrate", "--from", ref_etcd.endpoint, "--prefix", "/src/", "--dest-prefix", "/dst/",
            "--no-follow")
    assert r.returncode == 0 and "10 keys copied" in r.stdout, r.stdout + r.stderr
    sch = server.channel()
    got = rpc_pb2_grpc.KVStub(sch).Range(rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00"), timeout=5)
    sch.close()
    assert sorted(kv.key for kv in got.kvs) == sorted(b"/dst/k%d" % i for i in range(10))
    # the source goes away while following: a clear error and exit 1, not a hang or a crash
    p = subprocess.Popen([KETCHCTL, "--endpoints=%s" % server.endpoint, "migrate", "--from", ref_etcd.endpoint],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("migrate: following "):
            break
    ref_etcd.kill()
    out, err = p.communicate(timeout=30)
    assert p.returncode == 1 and "migrate: failed:" in out and err.startswith("Error: migrate: "), (out, err)


def test_get_list(seeded, test_config):
    """k8s get <resource> -o json|yaml without a name: a List, as kubectl."""
    path, _ = test_config
    r = k8s(seeded, "get", "pods", "-n", "web", "-o", "json")
    o = json.loads(r.stdout)
    assert list(o) == ["apiVersion", "items", "kind", "metadata"] and o["kind"] == "List"
    assert [i["metadata"]["name"] for i in o["items"]] == ["db-0", "frontend-7c9f8d6b5-x2x7q"]
    assert yaml.safe_load(k8s(seeded, "get", "deployments", "-o", "yaml").stdout)["items"][1]["metadata"]["name"] == "frontend"
    # an object that cannot be decoded is named, the others are shown
    r = k8s(seeded, "get", "secrets", "-o", "json")
    assert r.returncode == 1 and 'error: /registry/secrets/web/tls-cert: encrypted with aescbc key "key1"' in r.stderr
    assert [i["metadata"]["name"] for i in json.loads(r.stdout)["items"]] == ["db-password"]
    r = k8s(seeded, "get", "secrets", "-o", "json", "--encryption-config", path)
    assert r.returncode == 0 and len(json.loads(r.stdout)["items"]) == 3
    r = k8s(seeded, "get", "pods")
    assert r.returncode == 128 and "k8s get needs <resource> <name>" in r.stderr
