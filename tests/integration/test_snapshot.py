"""Snapshots in etcd's format, both ways with real etcd.

- ketch -> `etcdctl snapshot save` -> `etcdctl snapshot status` (hash,
  revision, total keys, size) -> `etcdctl snapshot restore` -> real etcd
  serves the same keys, values, revisions, history, compaction mark,
  leases and auth users/roles as ketch did;
- real etcd -> `etcdctl snapshot save` -> `ketchctl snapshot restore` (and
  `ketch --restore-snapshot`) -> ketch serves what etcd served;
- corrupted / truncated snapshot files are refused with a clear error and
  leave no data dir behind; a client that goes away mid-stream does not
  hurt the server;
- a 200 MB database is streamed with flat server memory (anonymous RSS).

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_snapshot.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from harness import (ETCD, ETCDCTL, REPO, Server, _test_deadline, is_etcd,  # noqa: E402,F401
                     run_etcdctl, server_under_test_binary)

BUILD = os.environ.get("KETCH_BUILD", "build")
BDIR = BUILD if os.path.isabs(BUILD) else os.path.join(REPO, BUILD)
KETCHCTL = os.path.join(BDIR, "ketchctl")

if is_etcd(server_under_test_binary()) or not os.path.exists(KETCHCTL):
    pytest.skip("needs ketch and ketchctl", allow_module_level=True)


def ctl(endpoint, *args, user=None, ok=True, timeout=30, stdin=None):
    a = list(args)
    if user:
        a = ["--user", user] + a
    r = run_etcdctl(endpoint, *a, timeout=timeout, stdin=stdin)
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def ketchctl(*args, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    return subprocess.run([KETCHCTL] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=env)


def etcdctl_offline(*args, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return subprocess.run([ETCDCTL] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def tmp(request):
    d = tempfile.mkdtemp(prefix="ketch-test-snap-")
    request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def new_server(request, binary=None, **kw):
    s = Server(binary=binary, **kw)
    request.addfinalizer(s.cleanup)
    return s


LONG = "k" * 10000  # a 10 KB key: a bucket of long keys in LMDB, overflow pages in bbolt


def workload(ep, user=None):
    """The same history on any server; returns the lease ID it granted."""
    c = lambda *a: ctl(ep, *a, user=user)  # noqa: E731
    c("put", "a", "1")
    c("put", "b", "2")
    c("put", "a", "3")
    c("del", "b")
    # one revision, three changes (sub-revisions 0..2)
    ctl(ep, "txn", user=user, stdin='value("a") = "3"\n\nput t1 x\nput t2 y\ndel a\n\n\n')
    c("put", "a", "again")
    lease = ctl(ep, "lease", "grant", "600", user=user).stdout.split()[1]
    c("put", "--lease=" + lease, "leased", "v")
    c("put", LONG, "long value")
    c("put", "big", "x" * 20000)
    c("put", "c", "4")
    c("compact", "5")
    c("put", "d", "5")
    c("del", "c")
    c("put", "c", "6")
    for i in range(40):
        c("put", "many/%03d" % i, "v%d" % i)
    return lease


def header_rev(ep, user=None):
    return json.loads(ctl(ep, "get", "a", "-w", "json", user=user).stdout)["header"]["revision"]


def view(ep, user=None):
    """What a client sees: every key at the head and at each revision from
    the compaction on, and the compacted error below it."""
    rev = header_rev(ep, user)
    out = {"rev": rev}
    for r in range(1, rev + 1):
        p = ctl(ep, "get", "", "--prefix", "-w", "json", "--rev=%d" % r, user=user, ok=False)
        if p.returncode != 0:
            out[r] = p.stderr.strip().splitlines()[-1]
        else:
            out[r] = json.loads(p.stdout).get("kvs", [])
    out["head"] = json.loads(ctl(ep, "get", "", "--prefix", "-w", "json", user=user).stdout)["kvs"]
    return out


def lease_view(ep, lease, user=None):
    r = json.loads(ctl(ep, "lease", "timetolive", lease, "--keys", "-w", "json", user=user).stdout)
    return r


def restore_member(request, snap, binary=None, tool="ketchctl", extra=()):
    """A Server whose data dir is restored from `snap` (not started)."""
    s = new_server(request, binary=binary, label="restored")
    args = ["snapshot", "restore", snap, "--data-dir", s.data_dir, "--name", s.name,
            "--initial-cluster", "%s=%s" % (s.name, s.peer_url),
            "--initial-advertise-peer-urls", s.peer_url] + list(extra)
    r = ketchctl(*args) if tool == "ketchctl" else etcdctl_offline(*args)
    assert r.returncode == 0, r.stderr
    return s


def status(tool, path):
    r = (ketchctl if tool == "ketchctl" else etcdctl_offline)("snapshot", "status", "-w", "json", path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check_lease_restored(src, dst, lease):
    a, b = lease_view(src, lease), lease_view(dst, lease)
    assert b["granted-ttl"] == a["granted-ttl"] == 600
    assert b["keys"] == a["keys"]
    assert 0 < b["ttl"] <= 600


def test_ketch_to_etcd(request, tmp):
    k = new_server(request).start()
    lease = workload(k.endpoint)
    snap = os.path.join(tmp, "k.db")
    r = ctl(k.endpoint, "snapshot", "save", snap)
    assert "Snapshot saved at" in r.stdout
    st = status("etcdctl", snap)
    assert st["revision"] == header_rev(k.endpoint)
    assert st["totalSize"] == os.path.getsize(snap) - 32
    # key bucket: one entry per revision change still in history, plus the
    # other buckets' entries
    assert st["totalKey"] > 40
    assert status("ketchctl", snap) == st
    for w in ("simple", "table", "fields"):
        a = ketchctl("snapshot", "status", "-w", w, snap)
        b = etcdctl_offline("snapshot", "status", "-w", w, snap)
        assert a.stdout == b.stdout and a.returncode == b.returncode == 0, (a, b)

    e = restore_member(request, snap, binary=ETCD, tool="etcdctl")
    e.start()
    assert view(e.endpoint) == view(k.endpoint)
    check_lease_restored(k.endpoint, e.endpoint, lease)
    # the restored etcd is a member of a new cluster of one (the members
    # bucket ketch wrote is not taken for the membership)
    ms = json.loads(ctl(e.endpoint, "member", "list", "-w", "json").stdout)["members"]
    assert [m["peerURLs"] for m in ms] == [[e.peer_url]]
    # the restored etcd is a working store: it writes on from the revision
    r = json.loads(ctl(e.endpoint, "put", "new", "1", "-w", "json").stdout)
    assert r["header"]["revision"] == header_rev(k.endpoint) + 1


def test_etcd_to_ketch(request, tmp):
    e = new_server(request, binary=ETCD, tmpfs=True, label="ref").start()
    lease = workload(e.endpoint)
    snap = os.path.join(tmp, "e.db")
    ctl(e.endpoint, "snapshot", "save", snap)
    assert status("ketchctl", snap) == status("etcdctl", snap)

    k = restore_member(request, snap)
    k.start()
    assert view(k.endpoint) == view(e.endpoint)
    check_lease_restored(e.endpoint, k.endpoint, lease)
    # the restored member has the IDs --name/--initial-cluster give, not etcd's
    hk = json.loads(ctl(k.endpoint, "get", "a", "-w", "json").stdout)["header"]
    he = json.loads(ctl(e.endpoint, "get", "a", "-w", "json").stdout)["header"]
    assert hk["member_id"] != he["member_id"]
    r = json.loads(ctl(k.endpoint, "put", "new", "1", "-w", "json").stdout)
    assert r["header"]["revision"] == he["revision"] + 1
    # and a ketch snapshot of the restored store restores again (ketch -> ketch)
    snap2 = os.path.join(tmp, "k2.db")
    ctl(k.endpoint, "snapshot", "save", snap2)
    k2 = restore_member(request, snap2)
    k2.start()
    assert view(k2.endpoint) == view(k.endpoint)


def test_restore_snapshot_flag(request, tmp):
    e = new_server(request, binary=ETCD, tmpfs=True, label="ref").start()
    workload(e.endpoint)
    snap = os.path.join(tmp, "e.db")
    ctl(e.endpoint, "snapshot", "save", snap)
    k = new_server(request, extra_args=["--restore-snapshot", snap])
    k.start()
    assert view(k.endpoint) == view(e.endpoint)
    # a restart with the flag still given keeps the data written since
    ctl(k.endpoint, "put", "after", "1")
    k.stop()
    # a temporary snapshot file left by a crash goes at the next start
    stale = os.path.join(k.data_dir, "member", "kv", "snapshot.1.1.tmp")
    open(stale, "wb").write(b"x" * 4096)
    k.start()
    assert not os.path.exists(stale)
    assert ctl(k.endpoint, "get", "after", "--print-value-only").stdout == "1\n"


def auth_setup(ep):
    ctl(ep, "user", "add", "root:rootpw")
    ctl(ep, "role", "add", "reader")
    ctl(ep, "role", "grant-permission", "reader", "read", "a", "z")
    ctl(ep, "user", "add", "alice:alicepw")
    ctl(ep, "user", "grant-role", "alice", "reader")
    ctl(ep, "user", "grant-role", "root", "root")
    ctl(ep, "put", "a", "1")
    ctl(ep, "auth", "enable")


def auth_view(ep):
    u = "root:rootpw"
    out = {
        "users": ctl(ep, "user", "list", user=u).stdout,
        "roles": ctl(ep, "role", "list", user=u).stdout,
        "reader": ctl(ep, "role", "get", "reader", user=u).stdout,
        "alice": ctl(ep, "user", "get", "alice", user=u).stdout,
        "alice_read": ctl(ep, "get", "a", "--print-value-only", user="alice:alicepw").stdout,
    }
    bad = ctl(ep, "get", "a", user="alice:wrong", ok=False)
    out["bad_password"] = bad.stderr.strip().splitlines()[-1]
    denied = ctl(ep, "put", "a", "2", user="alice:alicepw", ok=False)
    out["denied"] = denied.stderr.strip().splitlines()[-1]
    return out


@pytest.mark.parametrize("direction", ["ketch_to_etcd", "etcd_to_ketch"])
def test_auth_across(request, tmp, direction):
    src = new_server(request, binary=ETCD if direction == "etcd_to_ketch" else None,
                     tmpfs=True, label="src").start()
    auth_setup(src.endpoint)
    snap = os.path.join(tmp, "a.db")
    ctl(src.endpoint, "snapshot", "save", snap, user="root:rootpw")
    # with auth on, only root may take a snapshot (etcd's authMaintenanceServer)
    r = ctl(src.endpoint, "snapshot", "save", os.path.join(tmp, "x.db"), user="alice:alicepw",
            ok=False)
    assert r.returncode != 0 and "permission denied" in r.stderr
    if direction == "ketch_to_etcd":
        dst = restore_member(request, snap, binary=ETCD, tool="etcdctl")
    else:
        dst = restore_member(request, snap)
    # auth is on in the restored member: the harness' anonymous readiness
    # check would be refused, so wait with root's credentials
    dst.start(wait=False)
    deadline = time.monotonic() + 15
    while ctl(dst.endpoint, "get", "a", user="root:rootpw", ok=False).returncode != 0:
        assert time.monotonic() < deadline and dst.running(), dst.log_tail()
        time.sleep(0.1)
    assert auth_view(dst.endpoint) == auth_view(src.endpoint)


def test_corrupt_snapshots_refused(request, tmp):
    k = new_server(request).start()
    workload(k.endpoint)
    snap = os.path.join(tmp, "k.db")
    ctl(k.endpoint, "snapshot", "save", snap)
    data = open(snap, "rb").read()

    def restore(path, *extra):
        d = os.path.join(tmp, "restored")
        r = ketchctl("snapshot", "restore", path, "--data-dir", d, *extra)
        assert r.returncode != 0, r
        assert not os.path.exists(d)  # nothing half-built is left
        return r.stderr

    trunc = os.path.join(tmp, "trunc.db")
    open(trunc, "wb").write(data[:len(data) // 2 + 100])
    assert "snapshot missing hash but --skip-hash-check=false" in restore(trunc)
    assert "invalid database" in restore(trunc, "--skip-hash-check")

    flip = bytearray(data)
    flip[5 * 4096 + 100] ^= 0xFF
    bad = os.path.join(tmp, "flip.db")
    open(bad, "wb").write(bytes(flip))
    assert "expected sha256 [" in restore(bad)

    # page-aligned truncation without the trailer: the meta pages point past
    # the end of the file
    cut = os.path.join(tmp, "cut.db")
    open(cut, "wb").write(data[:8 * 4096])
    assert "invalid database" in restore(cut, "--skip-hash-check")

    junk = os.path.join(tmp, "junk.db")
    open(junk, "wb").write(os.urandom(64 * 1024))
    assert "invalid database" in restore(junk, "--skip-hash-check")

    # a broken branch/leaf page (hash check skipped) is caught by the page
    # walk, not a crash
    broken = bytearray(data[:-32])
    for pg in range(3, len(broken) // 4096):
        broken[pg * 4096 + 8:pg * 4096 + 16] = b"\x02\x00\xff\xff\x00\x00\x00\x00"
    bp = os.path.join(tmp, "broken.db")
    open(bp, "wb").write(bytes(broken))
    err = restore(bp, "--skip-hash-check")
    assert "corrupt" in err or "integrity" in err, err
    r = ketchctl("snapshot", "status", bp)
    assert r.returncode != 0 and r.stderr.startswith("Error: ")

    # a missing file: etcdctl's words
    nope = os.path.join(tmp, "nope.db")
    for args in (("snapshot", "status", nope),
                 ("snapshot", "restore", nope, "--data-dir", os.path.join(tmp, "r"))):
        a, b = ketchctl(*args), etcdctl_offline(*args)
        assert a.returncode == b.returncode == 1
        assert a.stderr.strip().splitlines()[-1] == b.stderr.strip().splitlines()[-1]
    assert not os.path.exists(os.path.join(tmp, "r"))

    # an existing data dir is never overwritten (etcdctl's message)
    d = os.path.join(tmp, "exists")
    os.mkdir(d)
    r = ketchctl("snapshot", "restore", snap, "--data-dir", d)
    assert r.returncode != 0 and 'data-dir "%s" exists' % d in r.stderr


def test_client_gone_mid_stream(request, tmp):
    import grpc
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    k = new_server(request).start()
    ctl(k.endpoint, "put", "a", "1")
    ch = grpc.insecure_channel(k.endpoint)
    kvs = rpc_pb2_grpc.KVStub(ch)
    for i in range(8):
        kvs.Put(rpc_pb2.PutRequest(key=b"big%d" % i, value=b"y" * 500000))
    stub = rpc_pb2_grpc.MaintenanceStub(ch)
    it = stub.Snapshot(rpc_pb2.SnapshotRequest())
    first = next(it)
    assert len(first.blob) == 32 * 1024 and first.remaining_bytes > 0
    it.cancel()
    ch.close()
    # still serving, and a full snapshot still works
    ctl(k.endpoint, "put", "b", "2")
    snap = os.path.join(tmp, "k.db")
    ctl(k.endpoint, "snapshot", "save", snap)
    assert status("etcdctl", snap)["revision"] == header_rev(k.endpoint)
    # no temporary snapshot file is left next to the store
    kv = os.path.join(k.data_dir, "member", "kv")
    assert [f for f in os.listdir(kv) if f.startswith("snapshot.")] == []


def rss_anon_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def test_memory_flat_for_large_db(request, tmp):
    """200 MB of values; the server's anonymous memory does not grow with
    the database while the snapshot is written and streamed."""
    import grpc
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    # a short Raft log (--snapshot-count) and a restart, so that the
    # server's memory before the save is small and any growth would show
    k = new_server(request, extra_args=["--snapshot-count", "20"])
    # under ASan, freed memory waits in its quarantine (256 MB by default)
    # and would count as growth: keep it small so RSS means live memory
    asan = os.environ.get("ASAN_OPTIONS", "")
    k.start_env = {"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=1"}
    k.start()
    ch = grpc.insecure_channel(k.endpoint)
    kv = rpc_pb2_grpc.KVStub(ch)
    val = os.urandom(1024 * 1024)
    for i in range(200):
        kv.Put(rpc_pb2.PutRequest(key=b"blob/%04d" % i, value=val[i:] + val[:i]))
    ch.close()
    k.stop()
    k.start()
    pid = k.proc.pid
    base = rss_anon_kb(pid)
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_anon_kb(pid))
            time.sleep(0.02)
    t = threading.Thread(target=sample)
    t.start()
    snap = os.path.join(tmp, "big.db")
    try:
        r = etcdctl_offline("--endpoints=" + k.endpoint, "snapshot", "save", snap, timeout=300)
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr
    size = os.path.getsize(snap)
    assert size > 200 * 1024 * 1024
    grew_mb = (peak[0] - base) / 1024.0
    print("snapshot of %.0f MB: server anonymous RSS %d kB before, peak %d kB (+%.1f MB)"
          % (size / 1048576.0, base, peak[0], grew_mb))
    assert grew_mb < 32, "server memory grew by %.1f MB during a %.0f MB snapshot" % (
        grew_mb, size / 1048576.0)
    st = status("etcdctl", snap)
    assert st["totalSize"] == size - 32

    # the gateway with a client that stops reading: the server waits for it
    # instead of queueing the database (base64) in memory
    import socket
    sock = socket.create_connection(("127.0.0.1", k.client_port))
    sock.sendall(b"POST /v3/maintenance/snapshot HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 2\r\n\r\n{}")
    got = b""
    while len(got) < 1 << 20:
        got += sock.recv(65536)
    base = rss_anon_kb(pid)
    high = base
    for _ in range(50):
        time.sleep(0.02)
        high = max(high, rss_anon_kb(pid))
    sock.settimeout(60)
    parts, tail = [got], got[-16:]
    while True:
        b = sock.recv(1 << 20)
        if not b:
            break
        parts.append(b)
        tail = (tail + b)[-16:]
        if tail.endswith(b"\r\n0\r\n\r\n"):
            break
    sock.close()
    got = b"".join(parts)
    print("gateway, stalled client: server anonymous RSS %d kB, peak %d kB" % (base, high))
    assert (high - base) / 1024.0 < 32
    assert got.count(b'"blob"') == (size - 32 + 32767) // 32768 + 1


def test_gateway_and_chunks(request, tmp):
    """POST /v3/maintenance/snapshot streams {"result":SnapshotResponse}
    lines as etcd's grpc-gateway does; over gRPC and the gateway, the
    chunks are 32 KiB with remaining_bytes counting down to 0, then the
    sha256 of everything before it."""
    import base64
    import hashlib
    import urllib.request
    import grpc
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    k = new_server(request).start()
    ch = grpc.insecure_channel(k.endpoint)
    kvs = rpc_pb2_grpc.KVStub(ch)
    for i in range(4):
        kvs.Put(rpc_pb2.PutRequest(key=b"v%d" % i, value=os.urandom(40000)))
    grpc_msgs = [(m.remaining_bytes, m.blob)
                 for m in rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(rpc_pb2.SnapshotRequest())]
    ch.close()
    for body in (b"{}", b""):
        req = urllib.request.Request("http://%s/v3/maintenance/snapshot" % k.endpoint,
                                     data=body, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            lines = [json.loads(x) for x in r.read().decode().splitlines() if x.strip()]
        gw_msgs = [(int(x["result"].get("remaining_bytes", 0)),
                    base64.b64decode(x["result"]["blob"])) for x in lines]
        for msgs in (grpc_msgs, gw_msgs):
            data = b"".join(b for _, b in msgs[:-1])
            total = len(data)
            sent = 0
            for rem, blob in msgs[:-1]:
                assert len(blob) == min(32768, total - sent)
                sent += len(blob)
                assert rem == total - sent
            assert msgs[-1][0] == 0
            assert msgs[-1][1] == hashlib.sha256(data).digest()
            snap = os.path.join(tmp, "gw.db")
            open(snap, "wb").write(data + msgs[-1][1])
            assert status("etcdctl", snap)["revision"] == header_rev(k.endpoint)


def test_etcd_many_pages_to_ketch(request, tmp):
    """A snapshot of real etcd big enough for branch pages and overflow
    values in its bbolt file restores into ketch with the same answers at
    the head and at past revisions."""
    import grpc
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    e = new_server(request, binary=ETCD, tmpfs=True, label="ref").start()
    ch = grpc.insecure_channel(e.endpoint)
    kv = rpc_pb2_grpc.KVStub(ch)
    for i in range(3000):
        kv.Put(rpc_pb2.PutRequest(key=b"k/%05d" % (i % 2000), value=b"v%d" % i * (1 + i % 7)))
        if i % 97 == 0:
            kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"k/%05d" % (i // 2)))
        if i % 500 == 0:
            kv.Put(rpc_pb2.PutRequest(key=b"huge/%d" % i, value=os.urandom(30000)))
    kv.Compact(rpc_pb2.CompactionRequest(revision=1500, physical=True))
    ch.close()
    snap = os.path.join(tmp, "e.db")
    ctl(e.endpoint, "snapshot", "save", snap)
    assert status("ketchctl", snap) == status("etcdctl", snap)
    k = restore_member(request, snap)
    k.start()

    def dump(ep, rev):
        c = grpc.insecure_channel(ep)
        try:
            r = rpc_pb2_grpc.KVStub(c).Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0",
                                                                  revision=rev))
            return r.header.revision, [x.SerializeToString() for x in r.kvs]
        except grpc.RpcError as err:
            return err.code(), err.details()
        finally:
            c.close()
    head = dump(e.endpoint, 0)[0]
    for rev in (0, 1, 1499, 1500, 1501, 2222, head - 1, head):
        assert dump(k.endpoint, rev) == dump(e.endpoint, rev), rev


def test_restore_three_member_cluster(request, tmp):
    """etcd's disaster-recovery procedure with ketch: one snapshot from real
    etcd, restored once per member with the same --initial-cluster, makes a
    3-member ketch cluster that serves the data and takes writes."""
    from harness import ClusterMember, READY_TIMEOUT
    e = new_server(request, binary=ETCD, tmpfs=True, label="ref").start()
    workload(e.endpoint)
    snap = os.path.join(tmp, "e.db")
    ctl(e.endpoint, "snapshot", "save", snap)
    members = [ClusterMember("m%d" % (i + 1), "snap-m%d" % (i + 1)) for i in range(3)]
    ic = ",".join("%s=%s" % (m.name, m.peer_url) for m in members)
    for m in members:
        request.addfinalizer(m.cleanup)
        m.initial_cluster = ic
        r = ketchctl("snapshot", "restore", snap, "--data-dir", m.data_dir, "--name", m.name,
                     "--initial-cluster", ic, "--initial-cluster-token", m.token,
                     "--initial-advertise-peer-urls", m.peer_url)
        assert r.returncode == 0, r.stderr
    for m in members:
        m.start(wait=False)
    for m in members:
        m.wait_ready(timeout=max(READY_TIMEOUT, 30))
    want = json.loads(ctl(e.endpoint, "get", "", "--prefix", "-w", "json").stdout)
    ctl(members[0].endpoint, "put", "after", "restore")
    for m in members:
        got = json.loads(ctl(m.endpoint, "get", "", "--prefix", "-w", "json").stdout)
        assert [kv for kv in got["kvs"] if kv["key"] != "YWZ0ZXI="] == want["kvs"]
        assert got["header"]["revision"] == want["header"]["revision"] + 1
        assert len(json.loads(ctl(m.endpoint, "member", "list", "-w", "json").stdout)["members"]) == 3


def test_snapshot_consistent_under_writes(request, tmp):
    """Writes go on while a snapshot is written and sent: the snapshot is
    the store as of one revision (what etcdctl snapshot status reports), and
    a store restored from it answers exactly as the source did at that
    revision."""
    import grpc
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    k = new_server(request).start()
    ch = grpc.insecure_channel(k.endpoint)
    kv = rpc_pb2_grpc.KVStub(ch)
    val = os.urandom(256 * 1024)
    for i in range(200):
        kv.Put(rpc_pb2.PutRequest(key=b"blob/%04d" % i, value=val[i:] + val[:i]))
    stop = threading.Event()
    done = [0]

    def writer():
        c = grpc.insecure_channel(k.endpoint)
        s = rpc_pb2_grpc.KVStub(c)
        i = 0
        while not stop.is_set():
            s.Put(rpc_pb2.PutRequest(key=b"w/%03d" % (i % 300), value=b"x%d" % i))
            if i % 10 == 0:
                s.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"w/%03d" % ((i * 7) % 300)))
            i += 1
        done[0] = i
        c.close()
    t = threading.Thread(target=writer)
    t.start()
    snap = os.path.join(tmp, "busy.db")
    try:
        time.sleep(0.2)
        r = etcdctl_offline("--endpoints=" + k.endpoint, "snapshot", "save", snap, timeout=120)
        time.sleep(0.2)
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr
    assert done[0] > 0
    kv.Put(rpc_pb2.PutRequest(key=b"after", value=b"1"))
    rev = status("etcdctl", snap)["revision"]
    k2 = restore_member(request, snap)
    k2.start()

    def dump(ep, at):
        c = grpc.insecure_channel(ep, options=[("grpc.max_receive_message_length", 1 << 30)])
        try:
            res = rpc_pb2_grpc.KVStub(c).Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0",
                                                                    revision=at))
            return [x.SerializeToString() for x in res.kvs]
        finally:
            c.close()
    head = json.loads(ctl(k.endpoint, "get", "a", "-w", "json").stdout)["header"]["revision"]
    assert head > rev  # at least "after" came later
    assert dump(k2.endpoint, 0) == dump(k.endpoint, rev)
    ch.close()


def watch_history(ep, start, upto):
    """The events of every key from revision `start` through `upto`, as a
    Watch replays them from history."""
    import grpc
    from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
    ch = grpc.insecure_channel(ep)
    req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=b"\0", range_end=b"\0", start_revision=start, prev_kv=False))
    out = []
    it = rpc_pb2_grpc.WatchStub(ch).Watch(iter([req]))
    try:
        for resp in it:
            assert not resp.canceled, resp.cancel_reason
            out += [(e.type, e.kv.SerializeToString()) for e in resp.events]
            if out and out[-1] and resp.events and resp.events[-1].kv.mod_revision >= upto:
                break
    finally:
        it.cancel()
        ch.close()
    return out


def test_watch_history_after_restore(request, tmp):
    """A watcher resuming from a past revision (what Kubernetes' informers
    do) gets the same events from a ketch restored from etcd's snapshot as
    from etcd itself."""
    e = new_server(request, binary=ETCD, tmpfs=True, label="ref").start()
    workload(e.endpoint)
    snap = os.path.join(tmp, "e.db")
    ctl(e.endpoint, "snapshot", "save", snap)
    k = restore_member(request, snap)
    k.start()
    head = header_rev(e.endpoint)
    a = watch_history(e.endpoint, 6, head)
    assert len(a) > 40
    assert watch_history(k.endpoint, 6, head) == a


def test_differential_on_restored_stores(request, tmp):
    """tests/diff's generated requests, first to real etcd alone; then its
    snapshot is restored into a new etcd (etcdctl) and into ketch
    (ketchctl), and the generator goes on against both: every response,
    and a final sweep of every readable revision (history from before the
    snapshot included), must match as in the differential test."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "diff"))
    import test_differential as diff
    from etcd3.etcdrpc import rpc_pb2
    n = int(os.environ.get("KETCH_SNAP_DIFF_N", "1500"))
    src = new_server(request, binary=ETCD, tmpfs=True, label="ref").start()
    t = diff.Target(src)
    request.addfinalizer(t.close)
    for lid in diff.LEASES:
        diff.outcome(diff.call(t.lease.LeaseGrant, rpc_pb2.LeaseGrantRequest(ID=lid, TTL=3600)))
    gen = diff.Gen(11)

    def step(method, req, a):
        if a[0] == "ok":
            gen.rev = a[1].header.revision or gen.rev
            if method == "Compact":
                gen.compact = req.revision
    for _ in range(n):
        method, req = gen.next()
        step(method, req, diff.outcome(diff.call(t.fn(method), req)))
    snap = os.path.join(tmp, "e.db")
    ctl(src.endpoint, "snapshot", "save", snap)
    ref = restore_member(request, snap, binary=ETCD, tool="etcdctl")
    sut = restore_member(request, snap)
    ref.start(wait=False)
    sut.start()
    ref.wait_ready()
    tr, ts = diff.Target(ref), diff.Target(sut)
    request.addfinalizer(tr.close)
    request.addfinalizer(ts.close)
    for i in range(n):
        method, req = gen.next()
        a = diff.outcome(diff.call(tr.fn(method), req))
        b = diff.outcome(diff.call(ts.fn(method), req))
        step(method, req, a)
        if a == b:
            continue
        if a[0] == b[0] == "ok" and (
                (method == "Range" and diff.ranges_equivalent(req, a[1], b[1])) or
                (method == "Txn" and diff.txn_equivalent(req, a[1], b[1]))):
            continue
        pytest.fail("mismatch at request #%d after the restore (%s)\n--- request:\n%s\n"
                    "--- etcd:\n%s\n--- ketch:\n%s" % (i, method, req, diff.fmt(a), diff.fmt(b)),
                    pytrace=False)
    for rev in list(range(max(gen.compact - 2, 0), gen.rev + 3))[-300:]:
        req = rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00", revision=rev)
        a = diff.outcome(diff.call(tr.fn("Range"), req))
        b = diff.outcome(diff.call(ts.fn("Range"), req))
        assert a == b, "revision %d\n--- etcd:\n%s\n--- ketch:\n%s" % (rev, diff.fmt(a), diff.fmt(b))


def test_alarms_to_etcd(request, tmp):
    """Raised alarms travel in etcd's alarm bucket: a restored etcd lists them."""
    import etcd3
    k = new_server(request).start()
    c = etcd3.client(port=k.client_port)
    c.create_alarm(member_id=7)  # NOSPACE for member 7
    assert ctl(k.endpoint, "alarm", "list").stdout == "memberID:7 alarm:NOSPACE \n"
    snap = os.path.join(tmp, "k.db")
    ctl(k.endpoint, "snapshot", "save", snap)
    e = restore_member(request, snap, binary=ETCD, tool="etcdctl")
    e.start()
    assert ctl(e.endpoint, "alarm", "list").stdout == "memberID:7 alarm:NOSPACE \n"
