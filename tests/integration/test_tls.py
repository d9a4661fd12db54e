"""TLS on the client port: etcd's --cert-file/--key-file/--trusted-ca-file/
--client-cert-auth/--auto-tls with Debian's etcdctl and python3-etcd3.

Certificates are made with the openssl CLI in a temporary directory: a CA,
a server certificate (SAN 127.0.0.1), a client certificate, a client
certificate from another CA, and an expired client certificate."""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import Server, run_etcdctl, is_etcd, server_under_test_binary, _test_deadline  # noqa: F401,E402


def sh(cwd, *cmd):
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    sh(d, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
       "-out", name + ".pem", "-days", "30", "-subj", "/CN=" + name)


def make_cert(d, ca, name, ext, cn):
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    sh(d, "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
       "-out", name + ".csr", "-subj", "/CN=" + cn)
    sh(d, "openssl", "x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
       "-CAcreateserial", "-out", name + ".pem", "-days", "30", "-extfile", name + ".ext")


def make_expired(d, ca, name):
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\n"
                "serial = serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n")
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("1000\n")
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    sh(d, "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
       "-out", name + ".csr", "-subj", "/CN=expired")
    sh(d, "openssl", "ca", "-batch", "-config", "ca.cnf", "-cert", ca + ".pem", "-keyfile", ca + ".key",
       "-in", name + ".csr", "-out", name + ".pem", "-startdate", "20200101000000Z",
       "-enddate", "20200201000000Z", "-notext", "-extfile", name + ".ext")


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="ketch-test-certs-")
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_cert(d, "ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
              "extendedKeyUsage=serverAuth,clientAuth\n", "server")
    make_cert(d, "ca", "client", "extendedKeyUsage=clientAuth\n", "client")
    make_cert(d, "otherca", "stranger", "extendedKeyUsage=clientAuth\n", "stranger")
    make_expired(d, "ca", "expired")
    p = lambda n: os.path.join(d, n)  # noqa: E731
    yield p
    shutil.rmtree(d, ignore_errors=True)


def tls_server(request, certs, client_cert_auth=True, extra=()):
    args = ["--cert-file", certs("server.pem"), "--key-file", certs("server.key"),
            "--trusted-ca-file", certs("ca.pem")]
    if client_cert_auth:
        args.append("--client-cert-auth")
    s = Server(scheme="https", extra_args=args + list(extra), label="tls",
               tls_client=(certs("ca.pem"), certs("client.pem"), certs("client.key")))
    request.addfinalizer(s.cleanup)
    s.start()
    return s


@pytest.fixture
def mtls(request, certs):
    return tls_server(request, certs)


def ctl(s, certs, *args, cert="client", cacert="ca.pem"):
    a = ["--cacert", certs(cacert)]
    if cert:
        a += ["--cert", certs(cert + ".pem"), "--key", certs(cert + ".key")]
    return run_etcdctl("https://127.0.0.1:%d" % s.client_port, *(a + list(args)))


def log_text(s):
    with open(s.log_path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def test_etcdctl_with_client_cert(mtls, certs):
    r = ctl(mtls, certs, "put", "foo", "bar")
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr
    r = ctl(mtls, certs, "get", "foo")
    assert r.stdout.split() == ["foo", "bar"], r.stderr
    r = ctl(mtls, certs, "endpoint", "status", "-w", "json")
    assert r.returncode == 0 and '"revision":2' in r.stdout.replace(" ", ""), r.stdout + r.stderr


def test_refused_without_client_cert(mtls, certs):
    r = ctl(mtls, certs, "get", "foo", cert=None)
    assert r.returncode != 0
    assert ctl(mtls, certs, "get", "foo").returncode == 0  # still serving
    if not is_etcd(mtls.binary):
        assert "rejected connection" in log_text(mtls)


def test_refused_with_wrong_ca_cert(mtls, certs):
    r = ctl(mtls, certs, "get", "foo", cert="stranger")
    assert r.returncode != 0
    if not is_etcd(mtls.binary):
        assert "certificate verify failed" in log_text(mtls)


def test_refused_with_expired_cert(mtls, certs):
    r = ctl(mtls, certs, "get", "foo", cert="expired")
    assert r.returncode != 0
    if not is_etcd(mtls.binary):
        assert "certificate has expired" in log_text(mtls)


def test_server_cert_checked_by_client(mtls, certs):
    # the client trusts another CA: the client refuses the server
    r = ctl(mtls, certs, "get", "foo", cacert="otherca.pem")
    assert r.returncode != 0


def test_plaintext_client_on_tls_port(mtls, certs):
    r = run_etcdctl(mtls.endpoint, "get", "foo")
    assert r.returncode != 0
    # raw bytes: the server closes without sending HTTP
    with socket.create_connection(("127.0.0.1", mtls.client_port), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0" * 64)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        assert b"HTTP" not in data
    assert mtls.running()
    assert ctl(mtls, certs, "put", "k", "v").returncode == 0


def test_python_etcd3(mtls, certs):
    etcd3 = pytest.importorskip("etcd3")
    c = etcd3.client(host="127.0.0.1", port=mtls.client_port, ca_cert=certs("ca.pem"),
                     cert_key=certs("client.key"), cert_cert=certs("client.pem"), timeout=5)
    try:
        c.put("py", "thon")
        v, _ = c.get("py")
        assert v == b"thon"
    finally:
        c.close()


def test_tls_without_client_cert_auth(request, certs):
    s = tls_server(request, certs, client_cert_auth=False)
    r = ctl(s, certs, "put", "a", "1", cert=None)
    assert r.returncode == 0, r.stderr
    # a certificate that does not verify is still refused (as Go's VerifyClientCertIfGiven)
    assert ctl(s, certs, "get", "a", cert="stranger").returncode != 0


def test_tls_versions(request, certs):
    s = tls_server(request, certs, client_cert_auth=False, extra=["--tls-min-version", "TLS1.3"])
    ctx = ssl.create_default_context(cafile=certs("ca.pem"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", s.client_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    ctx = ssl.create_default_context(cafile=certs("ca.pem"))
    with socket.create_connection(("127.0.0.1", s.client_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
            assert t.version() == "TLSv1.3"


def test_cipher_suites(request, certs):
    s = tls_server(request, certs, client_cert_auth=False,
                   extra=["--tls-max-version", "TLS1.2",
                          "--cipher-suites", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"])
    ctx = ssl.create_default_context(cafile=certs("ca.pem"))
    with socket.create_connection(("127.0.0.1", s.client_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
            assert t.version() == "TLSv1.2"
            assert t.cipher()[0] == "ECDHE-RSA-AES256-GCM-SHA384"
    assert ctl(s, certs, "put", "c", "1", cert=None).returncode == 0


@pytest.mark.skipif(is_etcd(server_under_test_binary()), reason="ketch's own flag checks")
@pytest.mark.parametrize("args", [
    ["--tls-min-version", "TLS1.1"],
    ["--cipher-suites", "TLS_NOT_A_SUITE"],
    ["--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"],
    ["--peer-cert-file", "/nonexistent/cert.pem", "--peer-key-file", "/nonexistent/key.pem"],
])
def test_bad_tls_flags(args):
    s = Server(label="badflags", extra_args=args)
    try:
        s.start(wait=False)
        assert s._wait_exit(10)
        assert s.proc.returncode != 0
    finally:
        s.cleanup()


def test_https_needs_cert(request):
    s = Server(scheme="https", label="nocert")
    try:
        s.start(wait=False)
        assert s._wait_exit(10)
        assert s.proc.returncode != 0
    finally:
        s.cleanup()


def test_auto_tls(request):
    s = Server(scheme="https", extra_args=["--auto-tls"], label="autotls")
    request.addfinalizer(s.cleanup)
    s.start()
    ep = "https://127.0.0.1:%d" % s.client_port
    r = run_etcdctl(ep, "--insecure-skip-tls-verify", "--insecure-transport=false", "put", "x", "y")
    assert r.returncode == 0, r.stderr
    r = run_etcdctl(ep, "--insecure-skip-tls-verify", "--insecure-transport=false", "get", "x")
    assert r.stdout.split() == ["x", "y"]
    assert os.path.exists(os.path.join(s.data_dir, "fixtures", "client", "cert.pem"))
    assert os.path.exists(os.path.join(s.data_dir, "fixtures", "client", "key.pem"))
    # the same certificate after a restart
    with open(os.path.join(s.data_dir, "fixtures", "client", "cert.pem")) as f:
        before = f.read()
    s.restart()
    with open(os.path.join(s.data_dir, "fixtures", "client", "cert.pem")) as f:
        assert f.read() == before
    r = run_etcdctl(ep, "--insecure-skip-tls-verify", "--insecure-transport=false", "get", "x")
    assert r.stdout.split() == ["x", "y"]


def test_help_mentions_peer_tls():
    b = server_under_test_binary()
    if is_etcd(b):
        pytest.skip("ketch's help text")
    out = subprocess.run([b, "--help"], capture_output=True, text=True, timeout=10).stdout
    for flag in ("--cert-file", "--client-cert-auth", "--auto-tls", "--cipher-suites",
                 "--peer-cert-file", "--peer-auto-tls"):
        assert flag in out
    assert "Enable peer client cert authentication." in out
