#!/usr/bin/env bash
# Runs tests under the sanitizers (nightly toolchain, the standard library
# rebuilt with the same instrumentation). Jobs: those named as arguments, or
# all three, in this order:
#   asan  AddressSanitizer with leak checking (LSan) over the unit tests and
#         tests/{api,callback_rules,loops,bad_input,conformance,compression,
#         close_handshake,wake_ups,slow_callbacks,loop_teardown,pongs,
#         direct_writes,callbacks_wait_for_ws_new,fault_injection,resolver,
#         c_programs}.rs; the C
#         programs are built with -fsanitize=address,undefined against the
#         instrumented libws (LIBWS_C_SANITIZE, tests/support/cbuild.rs).
#   tsan  ThreadSanitizer over tests/{callback_rules,loops,close_handshake,
#         wake_ups,slow_callbacks,loop_teardown}.rs and
#         the tests of tests/api.rs that race sends, closes and frees.
#   miri  The library's unit tests under miri; those needing what miri
#         lacks (sockets, level-triggered epoll, OpenSSL) are ignored there.
# Each job ends with "sanitize JOB: N passed, N failed, N skipped", the run
# with "sanitize: ..." over all; a failed test, a sanitizer report or a build
# without the instrumentation fails it. Builds: target/{asan,tsan,miri}.
#   scripts/sanitize.sh [asan] [tsan] [miri]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=("$@")
[ ${#jobs[@]} -gt 0 ] || jobs=(asan tsan miri)
triple=x86_64-unknown-linux-gnu

# The pinned nightly toolchain with the standard library's source
# (-Zbuild-std) and miri; rustup fetches only what is missing.
. scripts/nightly.sh
install_nightly() {
  if ! command -v rustup >/dev/null 2>&1; then
    echo "sanitize.sh: needs rustup to install the nightly toolchain" >&2
    exit 1
  fi
  ensure_nightly rust-src miri
}

log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT
results=()
failed=0
total_passed=0
total_failed=0
total_skipped=0

# Counts one job's tests from its log (scripts/summary.sh) and looks for
# sanitizer reports that a test's exit status could hide (a report in a
# child process whose output a test only searched).
report() {
  local job=$1 status=$2 log=$3 skips=$4
  local counts
  counts=$(scripts/summary.sh "$log" "$skips" | sed -n 's/^total: //p')
  local found
  found=$(grep -c -E '^(==[0-9]+==ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer|SUMMARY: UndefinedBehaviorSanitizer)|runtime error: |^error: Undefined Behavior' "$log" || true)
  local p f k
  read -r p f k <<<"$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 \2 \3/p' <<<"$counts")"
  total_passed=$((total_passed + ${p:-0}))
  total_failed=$((total_failed + ${f:-0}))
  total_skipped=$((total_skipped + ${k:-0}))
  if [ "$status" -ne 0 ] || [ "$found" -ne 0 ] || [ -z "$counts" ]; then
    failed=1
    results+=("sanitize $job: FAILED (exit $status, $found sanitizer reports; ${counts:-no count})")
  else
    results+=("sanitize $job: $counts")
  fi
  echo "${results[-1]}"
}

# Runs one command of a job, its output to the terminal and the job's log;
# the job's status is the worst of its commands'.
step() {
  local job=$1
  shift
  mkdir -p "$log_dir/$job.skips"
  set +e
  LIBWS_SKIP_DIR="$log_dir/$job.skips" "$@" 2>&1 | tee -a "$log_dir/$job.log"
  local s=${PIPESTATUS[0]}
  set -e
  [ "$s" -eq 0 ] || status=$s
}

# Instrumented builds are slower: the tests' bound on one wait (WAIT in
# tests/common/mod.rs, and the C programs' waits) is this many times its
# usual 10 s. It only decides how long a failing test takes to fail.
# Read when the tests are built; target/asan and target/tsan are built
# with it.
asan_time_scale=3
tsan_time_scale=5

# Line tables are enough for the reports' stack traces, and link faster
# than full debug info; the builds are cold under CI: no incremental state.
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
[ "${CI:-}" != true ] || export CARGO_INCREMENTAL=0

cargo_nightly() {
  nice cargo "+$NIGHTLY" "$@"
}

# A build that lost its instrumentation would pass quietly: check that a
# test binary has the sanitizer's entry point.
check_instrumented() {
  local job=$1 symbol=$2 binary
  binary=$(find "target/$job/$triple/debug/deps" -maxdepth 1 -type f -executable -name 'loops-*' | head -1)
  # Not `nm | grep -q`: grep's early exit fails nm under pipefail.
  if [ -z "$binary" ] || ! grep -q "$symbol" <(nm "$binary"); then
    echo "sanitize $job: ${binary:-no test binary} lacks $symbol: not instrumented" | tee -a "$log_dir/$job.log"
    status=1
  fi
}

asan() {
  status=0
  echo "== sanitize asan"
  # Leak checking is on (LSan is part of ASan on x86_64 Linux); a C
  # program's report ends it with a failure that its test sees.
  export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LIBWS_C_SANITIZE=address,undefined
  export RUSTFLAGS=-Zsanitizer=address
  export LIBWS_TEST_TIME_SCALE=$asan_time_scale
  local cargo=(-Zbuild-std --target "$triple" --target-dir target/asan)
  # Puts libws.so and libws.a where tests/c_programs.rs links them from.
  step asan cargo_nightly build "${cargo[@]}" --lib
  # Left out: valgrind under ASan cannot work (both replace malloc); the
  # README route links the uninstrumented target/release; the
  # zip bomb's memory bound (ASan's shadow and quarantine are hundreds of
  # MiB; tests/ping_flood.rs is not run for the same reason);
  # one that caps the address space, where ASan cannot map its shadow.
  step asan cargo_nightly test "${cargo[@]}" --no-fail-fast --lib --test api --test callback_rules \
    --test loops --test bad_input --test c_programs --test conformance --test compression \
    --test close_handshake --test wake_ups --test slow_callbacks --test loop_teardown \
    --test pongs --test direct_writes --test callbacks_wait_for_ws_new --test fault_injection \
    --test resolver -- \
    --skip contract_program_under_valgrind --skip readme_route_without_installing \
    --skip zip_bomb_fails_with_1009_quickly_and_in_bounded_memory \
    --skip a_ws_new_that_returned_null_never_connects_nor_calls_back
  check_instrumented asan __asan_init
  unset ASAN_OPTIONS UBSAN_OPTIONS LIBWS_C_SANITIZE RUSTFLAGS LIBWS_TEST_TIME_SCALE
  report asan "$status" "$log_dir/asan.log" "$log_dir/asan.skips"
}

tsan() {
  status=0
  echo "== sanitize tsan"
  # Each suppression names one frame and says why (scripts/tsan.supp).
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp"
  export RUSTFLAGS=-Zsanitizer=thread
  export LIBWS_TEST_TIME_SCALE=$tsan_time_scale
  local cargo=(-Zbuild-std --target "$triple" --target-dir target/tsan)
  # Left out: two close-timeout tests that queue tens of MiB of sends in
  # an instrumented debug build (the first left out for its old 3 s bound;
  # now bounded by WAIT, neither has been tried under TSan).
  step tsan cargo_nightly test "${cargo[@]}" --no-fail-fast --test callback_rules --test loops \
    --test close_handshake --test wake_ups --test slow_callbacks --test loop_teardown -- \
    --skip close_with_a_server_that_stopped_reading_ends_after_the_close_timeout \
    --skip a_close_that_timed_out_before_our_answer_went_out_is_not_clean
  # From tests/api.rs, the tests that race sends, closes and frees across
  # threads and callbacks (each in all three modes).
  step tsan cargo_nightly test "${cargo[@]}" --no-fail-fast --test api -- \
    eight_threads_keep_their_order send_from_inside_on_message free_inside_each_callback \
    free_while_connecting_and_while_server_is_silent_is_prompt \
    free_from_another_thread_waits_for_a_running_callback close_while_connecting_fails_promptly \
    a_flooding_server_does_not_starve_close
  check_instrumented tsan __tsan_init
  unset TSAN_OPTIONS RUSTFLAGS LIBWS_TEST_TIME_SCALE
  report tsan "$status" "$log_dir/tsan.log" "$log_dir/tsan.skips"
}

miri() {
  status=0
  echo "== sanitize miri"
  # Isolation off: the tests read the clock and take random masks.
  # Left out by name: tests that push megabytes through zlib-rs, 64 KiB
  # frames or tens of thousands of frames: minutes each, interpreted.
  MIRIFLAGS=-Zmiri-disable-isolation step miri cargo_nightly miri test --target-dir target/miri --lib -- \
    --skip deflate::tests::round_trip_every_window_and_takeover \
    --skip deflate::tests::inflated_size_is_bounded_by_the_limit \
    --skip frames::tests::zip_bomb_fails_with_1009_holding_at_most_the_limit \
    --skip frames::tests::random_fragmentation_and_chunking_round_trip \
    --skip frames::tests::non_minimal_length_encodings_are_refused \
    --skip frames::tests::pongs_coalesce_once_the_output_is_blocked \
    --skip frames::tests::a_pong_offered_to_a_blocked_tls_write_is_not_replaced
  report miri "$status" "$log_dir/miri.log" "$log_dir/miri.skips"
}

install_nightly
for job in "${jobs[@]}"; do
  case "$job" in
    asan | tsan | miri) "$job" ;;
    *)
      echo "sanitize.sh: unknown job $job (asan, tsan, miri)" >&2
      exit 2
      ;;
  esac
done
for line in "${results[@]}"; do
  echo "$line"
done
# A failed job whose tests all passed (a sanitizer report) counts as one
# failure here, so that the closing line never reads as a clean run.
if [ "$failed" -ne 0 ] && [ "$total_failed" -eq 0 ]; then
  total_failed=1
fi
echo "sanitize: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit "$failed"
