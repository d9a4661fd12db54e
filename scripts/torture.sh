#!/usr/bin/env bash
# `make torture`: random faults against 3- and 5-member clusters behind
# fault proxies for TORTURE_SECONDS (default 600), checking every round's
# history (tests/torture.py). Prints the seed; a failure prints the seed
# to replay with: TORTURE_SEED=<seed> make torture.
# KETCH_BIN picks the binary (default build/ketch; build-asan/ketch works).
set -u
cd "$(dirname "$0")/.."
export KETCH_BIN="${KETCH_BIN:-$PWD/build/ketch}"
exec /usr/bin/python3 tests/torture.py
