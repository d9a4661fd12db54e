#!/usr/bin/env bash
# Runs every test: unit tests (cmocka) and the black-box suites (pytest:
# integration with etcdctl and python3-etcd3, differential against real
# etcd, crash), first on the plain build, then on the ASan+UBSan build.
# Called by `make test`; prints one closing line "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
PY=/usr/bin/python3   # Debian's interpreter: python3-etcd3 loads only there
export ETCDCTL_API=3
passed=0
failed=0
failures=()

step() { # step NAME CMD...: runs a step, counts it
  local name=$1; shift
  echo "=== $name"
  local start=$SECONDS
  if "$@"; then
    passed=$((passed + 1)); echo "=== $name: ok ($((SECONDS - start))s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAILED ($((SECONDS - start))s)"
  fi
}

unit() { # unit BUILD_DIR
  local rc=0
  for t in "$1"/tests/test_*; do
    [ -x "$t" ] || continue
    local t0=$SECONDS
    timeout 300 "$t" || rc=1
    echo "--- $t: $((SECONDS - t0))s"
  done
  return $rc
}

# The black-box tests mostly wait (elections, leases, timeouts), so they run
# in TEST_WORKERS pytest-xdist workers (default 3); each picks its own free
# ports and temp dirs. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS=${TEST_WORKERS:-3}
pysuite() { # pysuite BUILD_DIR
  local par=()
  ((TEST_WORKERS > 0)) && par=(-n "$TEST_WORKERS" --dist load)
  KETCH_BUILD="$1" KETCH_BIN="$PWD/$1/ketch" timeout 1200 "$PY" -m pytest -q \
    -p no:cacheprovider "${par[@]}" --durations=15 tests/integration tests/diff tests/crash
}

build_plain() { make -j"$(nproc)" all; }
build_asan() { make -j"$(nproc)" asan; }

step "build" build_plain || true
step "build (asan+ubsan)" build_asan || true
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
step "unit" unit build
step "unit (asan+ubsan)" unit build-asan
step "black-box" pysuite build
step "black-box (asan+ubsan)" pysuite build-asan

echo
if ((failed)); then echo "failed: ${failures[*]}"; fi
echo "$passed passed, $failed failed"
((failed == 0))
