"""Peer traffic over TLS (--peer-cert-file/--peer-key-file/
--peer-trusted-ca-file/--peer-client-cert-auth/--peer-auto-tls) and the
peer port's other face: ketchpb.Internal (followers forwarding to the
leader, the corruption checks' HashKV) is served there only, never on the
client port. Members reach each other over the peer URLs only, so the
corruption checks and the removed-member probe work with https client URLs.

Certificates are made with the openssl CLI, as tests/integration/test_tls.py
does: a CA with one certificate per member (SAN 127.0.0.1, server and
client use), and a second CA for a stranger.

Every wait polls for a condition with a generous bound; nothing here
asserts a timing.

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_peer_tls.py
"""

import os
import shutil
import socket
import ssl
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (ClusterMember, READY_TIMEOUT, is_etcd, run_etcdctl, start_together,  # noqa: E402
                     server_under_test_binary)
from test_cluster import ctl_json, leader_of, wait_for  # noqa: E402
from test_tls import make_ca, make_cert  # noqa: E402

import grpc  # noqa: E402

PEER_EXT = ("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "extendedKeyUsage=serverAuth,clientAuth\n")


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="ketch-test-peer-certs-")
    make_ca(d, "ca")
    make_ca(d, "otherca")
    for n in ("m1", "m2", "m3"):
        make_cert(d, "ca", n, PEER_EXT, n)
    make_cert(d, "otherca", "stranger", PEER_EXT, "stranger")
    make_cert(d, "ca", "shared", PEER_EXT, "ketch-peer")
    make_cert(d, "ca", "intruder", PEER_EXT, "intruder")
    yield lambda n: os.path.join(d, n)
    shutil.rmtree(d, ignore_errors=True)


class PeerTLSMember(ClusterMember):
    """A cluster member whose peer URL is https."""

    @property
    def peer_url(self):
        return "https://127.0.0.1:%d" % self.peer_port


def tls_args(certs, cert, ca="ca", client_cert_auth=True):
    a = ["--peer-cert-file", certs(cert + ".pem"), "--peer-key-file", certs(cert + ".key"),
         "--peer-trusted-ca-file", certs(ca + ".pem")]
    if client_cert_auth:
        a.append("--peer-client-cert-auth")
    return a


def start_members(request, args_per_member, wait=None):
    """Members m1..mN with https peer URLs, started together; waits until
    the members in `wait` (default: all) answer a linearizable read."""
    if is_etcd(server_under_test_binary()):
        pytest.skip("ketch's peer transport")
    ms = [PeerTLSMember("m%d" % (i + 1), "peertls-m%d" % (i + 1), extra_args=a)
          for i, a in enumerate(args_per_member)]
    return start_together(request, ms, wait)


def log_text(m):
    with open(m.log_path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def wait_log(m, text, what):
    wait_for(lambda: text in log_text(m), what=what)


def writes_replicate(ms):
    leader = leader_of(ms)
    followers = [m for m in ms if m is not leader]
    for i, f in enumerate(followers):  # forwarded to the leader's peer port
        r = f.etcdctl("put", "k%d" % i, "v%d" % i)
        assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr
    for m in ms:
        r = m.etcdctl("get", "k", "--prefix")  # linearizable: ReadIndex via the leader
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["k0", "v0", "k1", "v1"]
    for m in ms:  # serializable: replicated by Raft over TLS
        wait_for(lambda: m.etcdctl("get", "k1", "--consistency=s").stdout.split() == ["k1", "v1"],
                 what="replication to %s" % m.name)
    return leader


def raw_exchange(port, data, timeout=5):
    """Sends `data` to 127.0.0.1:port in the clear; returns what came back
    before the server closed the connection (b"" when it closed at once)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            return got
        s.settimeout(timeout)
        while True:
            try:
                b = s.recv(4096)
            except socket.timeout:
                return None if not got else got  # None: still open after timeout
            except OSError:  # reset: closed with our bytes unread
                return got
            if not b:
                return got
            got += b


def h2_settings_over_tls(port, certs, cert=None):
    """TLS (trusting our CA, ALPN h2, with `cert`'s client certificate or
    none) to a peer port, then the HTTP/2 client preface and an empty
    SETTINGS frame; returns the header of the server's first frame.
    Raises ssl.SSLError when the server refuses the handshake, and
    AssertionError when it neither answers nor refuses (a timeout)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs("ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(certs(cert + ".pem"), certs(cert + ".key"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
            t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0\0\0\x04\0\0\0\0\0")
            got = b""
            while len(got) < 9:
                try:
                    b = t.recv(9 - len(got))
                except socket.timeout:
                    raise AssertionError("neither served nor refused: %r" % got)
                if not b:
                    raise AssertionError("closed without a TLS alert after %r" % got)
                got += b
            return got


def raft_handshake(server_id=1, address=b"127.0.0.1:1"):
    a = address + b"\0" * (8 - len(address) % 8)
    return (1).to_bytes(8, "little") + server_id.to_bytes(8, "little") + \
        len(a).to_bytes(8, "little") + a


def test_cluster_over_peer_tls(request, certs):
    ms = start_members(request, [tls_args(certs, "m%d" % (i + 1)) for i in range(3)])
    for m in ms:
        assert "listening for peers on 127.0.0.1:%d (TLS)" % m.peer_port in log_text(m)
    writes_replicate(ms)
    # one cluster: same revision everywhere, one leader
    revs = {ctl_json(m, "get", "k0")["header"]["revision"] for m in ms}
    assert len(revs) == 1

    victim = ms[0]
    # plain text on a TLS peer port: a Raft handshake, an HTTP/2 preface,
    # and garbage are refused in the handshake, with the reason logged
    assert raw_exchange(victim.peer_port, raft_handshake()) is not None
    assert raw_exchange(victim.peer_port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") is not None
    assert raw_exchange(victim.peer_port, os.urandom(4096)) is not None
    wait_log(victim, "peer: TLS handshake with 127.0.0.1:", "the refused handshake logged")

    # a TLS client with a certificate from another CA is refused
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs("ca.pem"))
    ctx.load_cert_chain(certs("stranger.pem"), certs("stranger.key"))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", victim.peer_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
                t.sendall(raft_handshake())
                if not t.recv(1):
                    raise ConnectionError("closed")
    wait_log(victim, "client certificate verify failed", "the stranger's refusal logged")

    # and without a certificate at all: the server's alert refuses it
    # (TLS 1.3: the client's side of the handshake is done before the
    # server has seen the empty Certificate, so the alert arrives at the
    # first read; TLS 1.2: in the handshake). A timeout is not a refusal.
    before = log_text(victim).count("peer: TLS handshake with 127.0.0.1:")
    with pytest.raises(ssl.SSLError) as ei:
        h2_settings_over_tls(victim.peer_port, certs)
    assert ei.value.reason in ("TLSV13_ALERT_CERTIFICATE_REQUIRED",
                               "SSLV3_ALERT_HANDSHAKE_FAILURE"), ei.value
    wait_for(lambda: log_text(victim).count("peer: TLS handshake with 127.0.0.1:") > before,
             what="the certificate-less handshake refused in the server's log")
    assert "peer did not return a certificate" in log_text(victim)
    # the very same connection with a good client certificate is served:
    # the peer port's HTTP/2 face answers the preface with its SETTINGS
    frame = h2_settings_over_tls(victim.peer_port, certs, cert="m2")
    assert frame[3] == 0x4 and frame[4] & 0x1 == 0, frame  # SETTINGS, not an ACK

    # nothing crashed: every member still serves, writes still replicate
    for m in ms:
        assert m.running()
    r = ms[0].etcdctl("put", "after", "1")
    assert r.returncode == 0, r.stderr
    for m in ms:
        wait_for(lambda: m.etcdctl("get", "after", "--consistency=s").stdout.split() == ["after", "1"],
                 what="write after the bad connections on %s" % m.name)


def test_peer_from_other_ca_cannot_join_or_forward(request, certs):
    # m3 trusts the right CA but presents a certificate from another one:
    # m1 and m2 refuse it in both directions
    args = [tls_args(certs, "m1"), tls_args(certs, "m2"), tls_args(certs, "stranger")]
    ms = start_members(request, args, wait=[])
    m1, m2, m3 = ms
    m1.wait_ready(timeout=max(READY_TIMEOUT, 30))
    m2.wait_ready(timeout=max(READY_TIMEOUT, 30))
    leader_of([m1, m2])
    r = m1.etcdctl("put", "secret", "s1")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "client certificate verify failed" in log_text(m1) + log_text(m2),
             what="m3 refused by m1 or m2, with the reason")
    # m3 never receives the log: no leader, no data, cannot forward
    time.sleep(1)
    r = m3.etcdctl("get", "secret", "--consistency=s")
    assert r.stdout == ""
    r = m3.etcdctl("--command-timeout=3s", "put", "from-m3", "x")
    assert r.returncode != 0
    r = m1.etcdctl("get", "from-m3")
    assert r.returncode == 0 and r.stdout == ""
    st = ctl_json(m3, "endpoint", "status")[0]["Status"]
    assert st.get("leader", 0) == 0


@pytest.mark.parametrize("files,text", [
    (("m1.pem", "m2.key"), "tls: private key does not match public key"),
    (("m1.key", "m1.key"), "tls: failed to find certificate PEM data in certificate input, but did "
                           "find a private key; PEM inputs may have been switched"),
    (("m1.pem", "nonexistent.key"), "--peer-key-file: open %s: no such file or directory"),
])
def test_peer_key_pair_errors_in_etcds_words(request, certs, files, text):
    """A peer key pair that cannot serve stops the member with the text
    etcd prints (Go's tls.X509KeyPair / os.ReadFile errors)."""
    if is_etcd(server_under_test_binary()):
        pytest.skip("ketch's start-up message")
    m = PeerTLSMember("m1", "peertls-badpair", extra_args=[
        "--peer-cert-file", certs(files[0]), "--peer-key-file", certs(files[1]),
        "--peer-trusted-ca-file", certs("ca.pem")])
    request.addfinalizer(m.cleanup)
    m.initial_cluster = "m1=" + m.peer_url
    m.start(wait=False)
    assert m._wait_exit(10) and m.proc.returncode != 0
    text = text % certs(files[1]) if "%s" in text else "peer TLS: " + text
    assert "\nketch: " + text + "\n" in log_text(m)


def test_peer_auto_tls(request):
    ms = start_members(request, [["--peer-auto-tls"]] * 3)
    for m in ms:
        assert os.path.exists(os.path.join(m.data_dir, "fixtures", "peer", "cert.pem"))
        assert "(TLS)" in log_text(m)
    writes_replicate(ms)
    # plain text is still refused on the TLS port
    assert raw_exchange(ms[1].peer_port, raft_handshake()) is not None
    wait_log(ms[1], "peer: TLS handshake with", "the refused handshake logged")


def test_garbage_on_cleartext_peer_port(request):
    from harness import start_cluster
    if is_etcd(server_under_test_binary()):
        pytest.skip("ketch's peer transport")
    ms = start_cluster(request, 3, label="peergarbage")
    leader = leader_of(ms)
    for data in (os.urandom(8192), b"\x01" + b"\0" * 7 + b"\xff" * 64,
                 raft_handshake(address=b"x" * 5000), b"PRI * HTTP/1.1\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        got = raw_exchange(leader.peer_port, data, timeout=3)
        assert got is not None and got[:8] != b"HTTP/1.1", (data[:16], got)
    assert "peer: closing connection from 127.0.0.1:" in log_text(leader)
    r = leader.etcdctl("put", "still", "here")
    assert r.returncode == 0, r.stderr
    for m in ms:
        assert m.running()


def test_internal_not_served_on_client_port(request):
    from harness import start_cluster
    ms = start_cluster(request, 3, label="peerinternal")
    leader = leader_of(ms)
    rev = ctl_json(leader, "get", "x")["header"]["revision"]
    for m in ms:
        ch = grpc.insecure_channel("127.0.0.1:%d" % m.client_port)
        try:
            for method in ("Propose", "ReadIndex", "LeaseKeepAlive"):
                call = ch.unary_unary("/ketchpb.Internal/" + method)
                with pytest.raises(grpc.RpcError) as e:
                    # a put of "x" as root, if it were served
                    call(b"\x0a\x00", timeout=5)
                assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert e.value.details() == "unknown service ketchpb.Internal"
        finally:
            ch.close()
    assert ctl_json(leader, "get", "x")["header"]["revision"] == rev


def tls_attempt(port, certs, cert):
    """A TLS client with `cert` (from certs) sends a Raft handshake; returns
    True if the server kept the connection open (no refusal) for a moment."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs("ca.pem"))
    ctx.load_cert_chain(certs(cert + ".pem"), certs(cert + ".key"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
                t.sendall(raft_handshake())
                t.settimeout(2)
                try:
                    return t.recv(1) != b""
                except socket.timeout:
                    return True
    except (ssl.SSLError, ConnectionError, OSError):
        return False


def test_peer_cert_allowed_cn(request, certs):
    args = tls_args(certs, "shared") + ["--peer-cert-allowed-cn", "ketch-peer"]
    ms = start_members(request, [args] * 3)
    writes_replicate(ms)
    # same CA, other CN: refused, with the reason
    assert not tls_attempt(ms[0].peer_port, certs, "intruder")
    wait_log(ms[0], "CommonName authentication failed", "the CN refusal logged")
    assert "certificate CN \"intruder\"" in log_text(ms[0])
    r = ms[1].etcdctl("put", "after", "1")
    assert r.returncode == 0, r.stderr


def test_silent_peer_connection_closed(request):
    from harness import start_cluster
    if is_etcd(server_under_test_binary()):
        pytest.skip("ketch's peer transport")
    ms = start_cluster(request, 3, label="peersilent")
    leader = leader_of(ms)
    with socket.create_connection(("127.0.0.1", leader.peer_port), timeout=5) as s:
        s.sendall(b"\x01")  # half a handshake, then nothing
        s.settimeout(60)
        assert s.recv(1) == b""  # the server hung up
    assert "no handshake within" in log_text(leader)
    assert leader.etcdctl("put", "x", "1").returncode == 0


def test_tls_member_restart_catches_up(request, certs):
    ms = start_members(request, [tls_args(certs, "m%d" % (i + 1)) for i in range(3)])
    leader = leader_of(ms)
    victim = [m for m in ms if m is not leader][0]
    victim.kill()
    for i in range(20):
        r = leader.etcdctl("put", "r%02d" % i, "x")
        assert r.returncode == 0, r.stderr
    victim.restart(wait=False)
    victim.wait_ready(timeout=60)
    wait_for(lambda: victim.etcdctl("get", "r", "--prefix", "--keys-only",
                                    "--consistency=s").stdout.split() ==
             ["r%02d" % i for i in range(20)], what="the restarted member caught up over TLS")
    r = victim.etcdctl("put", "from-victim", "1")  # forwarded again
    assert r.returncode == 0, r.stderr


# ---- members with https client URLs: the corruption checks and the
# removed-member probe go over the peer URLs (peer TLS or not) ----

class HttpsClientMember(PeerTLSMember):
    """A member whose client URL is https (its own certificate, no client
    certificate asked), with https peer URLs when peer_tls."""

    def __init__(self, name, label, certs, peer_tls, extra_args=()):
        self.peer_scheme = "https" if peer_tls else "http"
        self.ca = certs("ca.pem")
        a = ["--cert-file", certs(name + ".pem"), "--key-file", certs(name + ".key")]
        if peer_tls:
            a += tls_args(certs, name)
        super().__init__(name, label, extra_args=a + list(extra_args))
        self.scheme = "https"
        self.tls_client = (self.ca, None, None)

    @property
    def peer_url(self):
        return "%s://127.0.0.1:%d" % (self.peer_scheme, self.peer_port)

    def etcdctl(self, *args, stdin=None, timeout=15):
        return run_etcdctl(self.client_url, "--cacert", self.ca, *args, stdin=stdin,
                           timeout=timeout)


def start_https_members(request, certs, peer_tls, extra_args=()):
    if is_etcd(server_under_test_binary()):
        pytest.skip("ketch's peer transport, log and tools")
    ms = [HttpsClientMember("m%d" % (i + 1), "https-m%d" % (i + 1), certs, peer_tls, extra_args)
          for i in range(3)]
    return start_together(request, ms)


def damage_store(member):
    """tests/tools/corrupt_store: one value byte flipped behind Raft's back."""
    import subprocess
    tool = os.path.join(os.path.dirname(member.binary), "tools", "corrupt_store")
    out = subprocess.run([tool, os.path.join(member.data_dir, "member", "kv")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("peer_tls", [False, True], ids=["cleartext-peers", "peer-tls"])
def test_corruption_checks_with_https_clients(request, certs, peer_tls):
    """--experimental-corrupt-check-time and --experimental-initial-corrupt-check
    with https client URLs: the leader asks the others for HashKV over their
    peer URLs (with peer TLS when on), so a member whose store was damaged
    behind Raft's back gets the CORRUPT alarm; restarted with the start-up
    check, it refuses to start."""
    ms = start_https_members(request, certs, peer_tls,
                             ["--experimental-corrupt-check-time", "300ms"])
    for i in range(20):
        r = ms[0].etcdctl("put", "k%d" % i, "value%d" % i)
        assert r.returncode == 0, r.stderr
    leader = leader_of(ms)
    victim = [m for m in ms if m is not leader][0]
    vid = ctl_json(victim, "endpoint", "status")[0]["Status"]["header"]["member_id"]
    # caught up before it stops (the damage flips the newest put)
    wait_for(lambda: victim.etcdctl("get", "k19", "--print-value-only",
                                    "--consistency=s").stdout == "value19\n",
             what="the victim caught up")
    assert all(m.etcdctl("alarm", "list").stdout == "" for m in ms)
    victim.stop()
    damage_store(victim)
    victim.start()
    want = "memberID:%d alarm:CORRUPT \n" % vid
    wait_for(lambda: leader.etcdctl("alarm", "list").stdout == want, timeout=30,
             what="the CORRUPT alarm")
    r = leader.etcdctl("put", "x", "y")
    assert "etcdserver: corrupt cluster" in r.stderr, r.stderr
    assert "HashKV differs" in log_text(leader)

    # the start-up check asks the same peer URLs: the damaged member stops
    victim.stop()
    victim.extra_args.append("--experimental-initial-corrupt-check")
    victim.start(wait=False)
    assert victim._wait_exit(60), victim.log_tail()
    assert victim.proc.returncode == 1
    log = log_text(victim)
    assert "%x found data inconsistency with peers" % vid in log, log[-3000:]
    assert any("remote-peer-endpoints=%s " % m.peer_url in log for m in ms if m is not victim)


def test_removed_member_learns_it_over_peer_tls(request, certs):
    """A removed member restarted on its old data dir (which never saw its
    removal) hears no leader, asks another member's peer port for the
    member list (peer TLS; its client URLs are https) and stops itself."""
    ms = start_https_members(request, certs, True)
    leader = leader_of(ms)
    victim = [m for m in ms if m is not leader][0]
    for i in range(5):
        assert leader.etcdctl("put", "r%d" % i, "x").returncode == 0
    victim.stop()
    vid = [x["ID"] for x in ctl_json(leader, "member", "list")["members"]
           if x["name"] == victim.name][0]
    r = leader.etcdctl("member", "remove", "%x" % vid)
    assert r.returncode == 0, r.stderr
    victim.start(wait=False)
    wait_for(lambda: not victim.running(), timeout=60, what="the removed member to stop")
    assert "permanently removed from the cluster" in log_text(victim)
    others = [m for m in ms if m is not victim]
    assert others[1].etcdctl("put", "after", "1").returncode == 0


def unix_sockets(pid):
    """How many AF_UNIX sockets process pid holds (socketpair ends count)."""
    with open("/proc/net/unix") as f:
        inodes = {line.split()[6] for line in list(f)[1:] if len(line.split()) >= 7}
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            n += 1
    return n


def test_cleartext_forwarding_not_relayed(request):
    """Cleartext peers: a follower's forwarded writes go to the leader over
    the TCP connection itself, as Raft's do; no socketpair relay (with its
    extra copies) on either side. Only TLS peers are relayed."""
    from harness import start_cluster
    ms = start_cluster(request, 3, label="peerdirect")
    leader = leader_of(ms)
    follower = next(m for m in ms if m is not leader)
    for i in range(5):
        r = follower.etcdctl("put", "fwd%d" % i, "v")
        assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr
    r = leader.etcdctl("get", "fwd", "--prefix", "--keys-only")
    assert r.returncode == 0 and r.stdout.split() == ["fwd%d" % i for i in range(5)], r.stdout
    for m in ms:
        assert unix_sockets(m.proc.pid) == 0, m.name
