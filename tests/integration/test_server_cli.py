"""The ketch binary itself: flags, ETCD_* variables, exit codes, and what it
refuses (a port in use, a data dir it cannot use or that is another
member's) without changing anything on disk."""
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

from harness import Server, is_etcd, server_under_test_binary, _test_deadline  # noqa: F401

BIN = server_under_test_binary()
pytestmark = pytest.mark.skipif(is_etcd(BIN), reason="ketch's own command line")


def run(*args, env=None, timeout=20):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    e.update(env or {})
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, env=e,
                          timeout=timeout, cwd=tempfile.gettempdir())


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0
    assert "ketch Version:" in r.stdout and "etcd API Version: 3.5" in r.stdout
    r = run("--help")
    assert r.returncode == 0
    for flag in ("--name", "--data-dir", "--listen-client-urls", "--advertise-client-urls",
                 "--listen-peer-urls", "--initial-advertise-peer-urls", "--initial-cluster",
                 "--max-request-bytes", "--max-txn-ops", "--quota-backend-bytes", "--log-level"):
        assert flag in r.stdout, flag


def test_unknown_flag_and_bad_values_exit_2():
    r = run("--no-such-flag")
    assert r.returncode == 2
    assert "flag provided but not defined: -no-such-flag" in r.stderr
    r = run("--max-txn-ops", "lots")
    assert r.returncode == 2
    assert 'invalid value "lots" for flag -max-txn-ops' in r.stderr
    r = run("--log-level", "loud")
    assert r.returncode == 2
    r = run("--initial-cluster-state", "maybe")
    assert r.returncode == 2
    r = run("--name", "x", "--initial-cluster", "y=http://127.0.0.1:1")
    assert r.returncode != 0
    assert 'couldn\'t find local name "x"' in r.stderr


def test_port_in_use_is_refused_and_nothing_written(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    data = tmp_path / "data"
    try:
        r = run("--data-dir", str(data), "--listen-client-urls", "http://127.0.0.1:%d" % port,
                "--listen-peer-urls", "http://127.0.0.1:1", "--initial-advertise-peer-urls",
                "http://127.0.0.1:1")
    finally:
        busy.close()
    assert r.returncode == 1
    assert "listen tcp 127.0.0.1:%d: bind: address already in use" % port in r.stderr
    assert not data.exists()


def test_unusable_data_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    s = Server(extra_args=[])
    s.data_dir = str(blocker / "data")
    s.start(wait=False)
    try:
        assert s.proc.wait(timeout=20) == 1
        with open(s.log_path) as f:
            assert "cannot create directory" in f.read()
    finally:
        s.cleanup()
    assert blocker.read_text() == "not a directory"


def test_data_dir_of_another_member_is_refused(tmp_path):
    a = Server(name="alpha")
    a.start()
    a.etcdctl("put", "k", "v")
    a.stop()
    ident = os.path.join(a.data_dir, "member", "identity")
    before = open(ident).read()
    b = Server(name="beta")
    b.data_dir = a.data_dir
    b.start(wait=False)
    try:
        assert b.proc.wait(timeout=20) == 1
        with open(b.log_path) as f:
            assert 'belongs to member "alpha"' in f.read()
    finally:
        b.workdir_keep = True
        b.proc = None
        shutil.rmtree(b.workdir, ignore_errors=True)
    assert open(ident).read() == before
    # alpha still starts on it and has its data
    a.start()
    try:
        r = a.etcdctl("get", "k", "--print-value-only")
        assert r.stdout.strip() == "v"
    finally:
        a.cleanup()


def test_environment_variables_and_limits(request):
    s = Server(name="envname")
    # The harness passes flags; ETCD_* variables set the rest.
    s.start_env = {"ETCD_MAX_TXN_OPS": "2", "ETCD_MAX_REQUEST_BYTES": "4096"}
    request.addfinalizer(s.cleanup)
    s.start()
    r = s.etcdctl("member", "list")
    assert ", envname, " in r.stdout
    r = s.etcdctl("put", "big", "x" * 5000)
    assert r.returncode != 0
    assert "etcdserver: request is too large" in r.stderr
    r = s.etcdctl("txn", stdin="\nput a 1\nput b 2\nput c 3\n\n\n")
    assert r.returncode != 0
    assert "etcdserver: too many operations in txn request" in r.stderr
    r = s.etcdctl("txn", stdin="\nput a 1\nput b 2\n\n\n")
    assert r.returncode == 0, r.stderr
