"""Shared process management for ketch's black-box tests.

The server under test is chosen by environment:

  KETCH_BIN                 path to a binary that accepts etcd's flags
  KETCH_TEST_AGAINST_ETCD   if set (and KETCH_BIN is not), test /usr/bin/etcd
  (default)                 <repo>/build/ketch if it exists, else /usr/bin/etcd

The reference server for differential tests is always real etcd
(KETCH_REF_ETCD, default /usr/bin/etcd).  etcd 3.4.23 has no
--unsafe-no-fsync, so the reference keeps its data dir on tmpfs (/dev/shm)
to make fsync cheap.

Only 127.0.0.1 is ever bound.  Every server started through the fixtures
below is stopped (SIGTERM, then SIGKILL) and its data dir removed.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ETCD = os.environ.get("KETCH_REF_ETCD", "/usr/bin/etcd")
ETCDCTL = os.environ.get("KETCH_ETCDCTL", "/usr/bin/etcdctl")

READY_TIMEOUT = float(os.environ.get("KETCH_TEST_READY_TIMEOUT", "10"))
STOP_TIMEOUT = 10.0
TEST_TIMEOUT = float(os.environ.get("KETCH_TEST_TIMEOUT", "150"))

_live = set()   # every Server started by this process, killed at exit


@atexit.register
def _kill_leftovers():
    for s in list(_live):
        try:
            s.cleanup()
        except Exception:
            pass


def server_under_test_binary():
    b = os.environ.get("KETCH_BIN")
    if b:
        return os.path.abspath(b)
    local = os.path.join(REPO, "build", "ketch")
    if os.path.exists(local) and not os.environ.get("KETCH_TEST_AGAINST_ETCD"):
        return local
    return ETCD


def is_etcd(binary):
    return os.path.basename(binary) == "etcd"


def _port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port_pair():
    """Two distinct free ports on 127.0.0.1 (client, peer)."""
    ports = []
    socks = []
    try:
        while len(ports) < 2:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports[0], ports[1]


def _tmp_base(tmpfs):
    base = os.environ.get("KETCH_TEST_TMPDIR")
    if base:
        return base
    if tmpfs and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None  # system default


class Server:
    """One single-member server process (ketch or etcd)."""

    def __init__(self, binary=None, name="default", tmpfs=False, label="sut", extra_args=(),
                 scheme="http", tls_client=None):
        """scheme "https" serves clients over TLS (pass the TLS flags in
        extra_args); tls_client=(ca, cert, key) file paths are what the
        readiness check connects with (cert/key may be None); without
        them it only waits for a TLS handshake, certificate unchecked."""
        self.binary = binary or server_under_test_binary()
        self.extra_args = list(extra_args)
        self.scheme = scheme
        self.tls_client = tls_client
        self.name = name
        self.label = label
        self.workdir = tempfile.mkdtemp(prefix="ketch-test-%s-" % label, dir=_tmp_base(tmpfs))
        self.data_dir = os.path.join(self.workdir, "data")
        self.log_path = os.path.join(self.workdir, "server.log")
        self.client_port, self.peer_port = free_port_pair()
        self.proc = None
        self._log = None
        self.starts = 0

    # -- addresses -------------------------------------------------------
    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.client_port

    @property
    def client_url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.client_port)

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    def args(self):
        a = [
            self.binary,
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", "%s=%s" % (self.name, self.peer_url),
        ] + self.extra_args
        return a

    # -- lifecycle -------------------------------------------------------
    def start(self, wait=True):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        env.update(getattr(self, "start_env", {}))
        self._log = open(self.log_path, "ab")
        self._log.write(("\n===== start #%d: %s\n" % (self.starts, " ".join(self.args()))).encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.args(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
            start_new_session=True)
        self.starts += 1
        _live.add(self)
        if wait:
            self.wait_ready()
        return self

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Poll with a gRPC Range until the server answers (bounded)."""
        import grpc
        from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s (%s) exited with %s during start-up; log:\n%s" % (
                    self.label, self.binary, self.proc.returncode, self.log_tail()))
            if self.scheme == "https" and not self.tls_client:
                import ssl
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                try:
                    with socket.create_connection(("127.0.0.1", self.client_port), timeout=1) as raw:
                        with ctx.wrap_socket(raw):
                            return
                except OSError as e:
                    last = e
                    time.sleep(0.05)
                    continue
            if self.scheme == "https":
                def rd(p):
                    if not p:
                        return None
                    with open(p, "rb") as f:
                        return f.read()
                ca, cert, key = self.tls_client
                ch = grpc.secure_channel(self.endpoint, grpc.ssl_channel_credentials(
                    root_certificates=rd(ca), private_key=rd(key), certificate_chain=rd(cert)))
            else:
                ch = grpc.insecure_channel(self.endpoint)
            try:
                stub = rpc_pb2_grpc.KVStub(ch)
                stub.Range(rpc_pb2.RangeRequest(key=b"\0ketch-test-ready"), timeout=1.0)
                return
            except grpc.RpcError as e:
                last = e
                time.sleep(0.05)
            finally:
                ch.close()
        self.kill()
        raise RuntimeError("%s (%s) not ready after %.0fs (last error %r); log:\n%s" % (
            self.label, self.binary, timeout, last, self.log_tail()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _wait_exit(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self._wait_exit(timeout):
                self.kill()
        self._close_log()
        return self.proc.returncode

    def kill(self):
        """kill -9 (the process only; it is its own session leader)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait_exit(STOP_TIMEOUT)
        self._close_log()
        return self.proc.returncode

    def restart(self, wait=True):
        """Restart on the same data dir and the same ports."""
        if self.running():
            self.stop()
        # the ports were ours; give the kernel a moment if something is odd
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (_port_free(self.client_port) and _port_free(self.peer_port)):
            time.sleep(0.05)
        return self.start(wait=wait)

    def _close_log(self):
        if self._log is not None:
            try:
                self._log.close()
            except OSError:
                pass
            self._log = None

    def sanitizer_report(self):
        """The first AddressSanitizer / LeakSanitizer / UBSan report in the
        server's log, or None. The sanitized build runs the whole suite, so
        a report fails the test that started the server."""
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return None
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            i = text.find(marker)
            if i >= 0:
                return text[max(0, i - 200):i + 4000]
        return None

    def cleanup(self):
        # SIGTERM rather than kill -9, so LeakSanitizer gets to look.
        self.stop()
        _live.discard(self)
        report = self.sanitizer_report()
        if report:
            print("kept %s after a sanitizer report: %s" % (self.label, self.workdir))
            raise AssertionError("sanitizer report from %s:\n%s" % (self.label, report))
        if os.environ.get("KETCH_TEST_KEEP"):
            print("kept %s: %s" % (self.label, self.workdir))
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- clients ---------------------------------------------------------
    def channel(self):
        import grpc
        return grpc.insecure_channel(self.endpoint)

    def etcdctl(self, *args, stdin=None, timeout=15):
        return run_etcdctl(self.endpoint, *args, stdin=stdin, timeout=timeout)

    def __repr__(self):
        return "<Server %s %s %s>" % (self.label, self.binary, self.endpoint)


def run_etcdctl(endpoint, *args, stdin=None, timeout=15):
    """Run Debian's etcdctl (v3 API). Returns CompletedProcess (text)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    cmd = [ETCDCTL, "--endpoints=%s" % endpoint, "--command-timeout=5s",
           "--dial-timeout=3s"] + list(args)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                          env=env, timeout=timeout)


# ---------------------------------------------------------------------------
# pytest fixtures (import them into a test module: `from harness import *`
# or via conftest).  Each yields a running Server and always cleans up.

@pytest.fixture(autouse=True)
def _test_deadline():
    """No pytest-timeout in Debian's set: bound every test with SIGALRM
    (KETCH_TEST_TIMEOUT seconds, default 150).  Autouse in every module
    that imports anything from harness via `from harness import ...`."""
    import signal as _signal

    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded KETCH_TEST_TIMEOUT=%.0fs" % TEST_TIMEOUT)
    old = _signal.signal(_signal.SIGALRM, on_alarm)
    _signal.setitimer(_signal.ITIMER_REAL, TEST_TIMEOUT)
    try:
        yield
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        _signal.signal(_signal.SIGALRM, old)


def _make(request, **kw):
    s = Server(**kw)
    request.addfinalizer(s.cleanup)
    s.start()
    return s


def start_pair(request):
    """A fresh server under test and a fresh reference etcd, started side by
    side (function scope, cleaned up by `request`). Returns (sut, ref)."""
    sut = Server(label="sut")
    request.addfinalizer(sut.cleanup)
    ref = Server(binary=ETCD, tmpfs=True, label="ref")
    request.addfinalizer(ref.cleanup)
    sut.start(wait=False)
    ref.start(wait=False)
    sut.wait_ready()
    ref.wait_ready()
    return sut, ref


@pytest.fixture
def server(request):
    """A fresh server under test (function scope)."""
    return _make(request, label="sut")


@pytest.fixture(scope="module")
def module_server(request):
    """A server under test shared by a module."""
    return _make(request, label="sut")


@pytest.fixture
def ref_etcd(request):
    """A fresh reference real etcd (function scope, data on tmpfs)."""
    return _make(request, binary=ETCD, tmpfs=True, label="ref")


@pytest.fixture(scope="module")
def module_ref_etcd(request):
    return _make(request, binary=ETCD, tmpfs=True, label="ref")


def describe_sut():
    b = server_under_test_binary()
    return "%s%s" % (b, " (real etcd)" if is_etcd(b) else "")


# ---------------------------------------------------------------------------
# Clusters (tests/integration/test_cluster.py).  Added for clustering; the
# single-member Server above is unchanged.

class ClusterMember(Server):
    """One member of a static cluster: --initial-cluster lists every member.
    `cluster_state` is "new" or "existing" (joining after `member add`)."""

    def __init__(self, name, label, binary=None, tmpfs=False, extra_args=()):
        super().__init__(binary=binary, name=name, tmpfs=tmpfs, label=label,
                         extra_args=extra_args)
        self.initial_cluster = "%s=%s" % (name, self.peer_url)
        self.cluster_state = "new"
        self.token = "ketch-test-cluster"

    def args(self):
        return [
            self.binary,
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", self.cluster_state,
            "--initial-cluster-token", self.token,
        ] + self.extra_args


def start_cluster(request, n=3, binary=None, tmpfs=False, label="sut", extra_args=()):
    """n members of a fresh cluster, started together and cleaned up by
    `request`. Returns the list of ClusterMember (members[i].name is
    "m<i+1>"). Waits until every member answers a linearizable read, so a
    leader has been elected."""
    members = [ClusterMember("m%d" % (i + 1), "%s-m%d" % (label, i + 1), binary=binary,
                             tmpfs=tmpfs, extra_args=extra_args) for i in range(n)]
    return start_together(request, members)


def start_together(request, members, wait=None):
    """Starts `members` (ClusterMember) as one fresh cluster, each cleaned
    up by `request`, and waits until those in `wait` (default: all) answer
    a linearizable read. Returns `members`."""
    ic = ",".join("%s=%s" % (m.name, m.peer_url) for m in members)
    for m in members:
        request.addfinalizer(m.cleanup)
        m.initial_cluster = ic
    for m in members:
        m.start(wait=False)
    for m in (wait if wait is not None else members):
        m.wait_ready(timeout=max(READY_TIMEOUT, 30))
    return members
