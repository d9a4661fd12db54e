#!/usr/bin/env bash
# Runs libFuzzer targets built by `make fuzz-build` (build-fuzz/fuzz/), each
# for FUZZ_SECONDS (default 60), two at a time. Each target starts from its
# committed seeds (fuzz/corpus/<t>) and regression inputs
# (fuzz/regressions/<t>); new inputs go to build-fuzz/corpus/<t>, crashes to
# build-fuzz/crashes/<t>/. Exits non-zero if any target crashed: copy the
# crash input to fuzz/regressions/<t>/, fix the bug, and `make test`
# replays it from then on.
#
# usage: scripts/fuzz.sh TARGET...
set -u
cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-60}
JOBS=${FUZZ_JOBS:-2}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

run_one() {
  local t=$1
  mkdir -p "build-fuzz/corpus/$t" "build-fuzz/crashes/$t"
  local log="build-fuzz/$t.log"
  local args=(-max_total_time="$SECS" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1
              -artifact_prefix="build-fuzz/crashes/$t/")
  [ -f "fuzz/$t.dict" ] && args+=(-dict="fuzz/$t.dict")
  if "build-fuzz/fuzz/$t" "${args[@]}" "build-fuzz/corpus/$t" "fuzz/corpus/$t" \
       $( [ -d "fuzz/regressions/$t" ] && echo "fuzz/regressions/$t" ) >"$log" 2>&1; then
    echo "fuzz: $t: ok ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$') runs in ${SECS}s)"
  else
    echo "fuzz: $t: FAILED (log: $log, inputs: build-fuzz/crashes/$t/)"
    tail -40 "$log"
    return 1
  fi
}

start=$SECONDS
rc=0
targets=("$@")
for ((i = 0; i < ${#targets[@]}; i += JOBS)); do
  pids=()
  for t in "${targets[@]:i:JOBS}"; do
    run_one "$t" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
done
echo "fuzz: ${#targets[@]} targets, ${SECS}s each, $((SECONDS - start))s in all"
exit $rc
