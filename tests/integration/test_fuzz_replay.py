"""Replays every fuzz input kept in the repository — the seed corpus
(fuzz/corpus/<target>) and the inputs of crashes found and fixed
(fuzz/regressions/<target>) — through the fuzz targets built with the
project's compiler (build/fuzz/, build-asan/fuzz/, linked with
fuzz/replay.c instead of libFuzzer). On the sanitized build a report fails
the test.

Run:  KETCH_BUILD=build-asan /usr/bin/python3 -m pytest -q tests/integration/test_fuzz_replay.py
"""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("KETCH_BUILD", "build")
FUZZ_BIN = os.path.join(BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD), "fuzz")
TARGETS = ["fuzz_h2", "fuzz_http1", "fuzz_tls", "fuzz_proto", "fuzz_json", "fuzz_bbolt"]
MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


@pytest.mark.parametrize("target", TARGETS)
def test_replay(target):
    binary = os.path.join(FUZZ_BIN, target)
    assert os.path.exists(binary), "build %s first (make all / make asan)" % binary
    dirs = [os.path.join(ROOT, "fuzz", d, target) for d in ("corpus", "regressions")]
    n_files = sum(len(os.listdir(d)) for d in dirs if os.path.isdir(d))
    assert n_files > 0, "no inputs for %s" % target
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env["FUZZ_VERBOSE"] = "1"
    p = subprocess.run([binary] + dirs, capture_output=True, text=True, timeout=120, env=env)
    for m in MARKERS:
        assert m not in p.stderr, p.stderr[-6000:]
    assert p.returncode == 0, p.stderr[-6000:]
    assert "replay: %d inputs" % n_files in p.stderr, p.stderr[-2000:]
    if target in ("fuzz_h2", "fuzz_http1", "fuzz_tls"):
        # The connection targets really talked to the server: most seeds
        # get an answer (a few are meant to be refused silently).
        answered = [int(l.split()[-2]) for l in p.stderr.splitlines()
                    if l.startswith("fuzz:") and l.endswith("answered")]
        assert len(answered) == n_files
        assert sum(1 for a in answered if a > 0) >= len(answered) // 2, answered
