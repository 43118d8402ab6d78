#!/usr/bin/env bash
# Runs tests under the sanitizers (nightly toolchain, the standard library
# rebuilt with the same instrumentation). Jobs: those named as arguments, or
# all three, in this order:
#   asan  AddressSanitizer with leak checking (LSan) over the library's unit
#         tests and the test files marked for it; the C programs are built
#         with -fsanitize=address,undefined against the instrumented libws
#         (LIBWS_C_SANITIZE, tests/support/cbuild.rs).
#   tsan  ThreadSanitizer over the test files and tests marked for it.
#   miri  The library's unit tests under miri; those needing what miri
#         lacks (sockets, level-triggered epoll, OpenSSL) are ignored there,
#         and those marked #[cfg_attr(miri, ignore)] are left out.
# Each job ends with "sanitize JOB: N passed, N failed, N skipped", the run
# with "sanitize: ..." over all; a failed test, a sanitizer report or a build
# without the instrumentation fails it. Builds: target/{asan,tsan,miri}.
#
# Which tests ASan and TSan run is written with the tests, not here:
#   //! sanitize: asan tsan
#       in the leading comment of every file in tests/: the jobs that run
#       the whole file, or "//! sanitize: none: WHY". A file without this
#       line fails --check (which `make test` runs), so a new or renamed
#       file cannot drop out of the jobs unnoticed.
#   // sanitize: not tsan: WHY
#       on its own line above a test function (above its #[test], or above
#       a function that every_mode! makes tests of): that job leaves it out.
#   // sanitize: tsan
#       the same place, in a file the job does not run: the job runs this
#       test (its name as a filter; every_mode! tests in all three modes).
#
#   scripts/sanitize.sh [asan] [tsan] [miri]   runs the jobs
#   scripts/sanitize.sh --list JOB             prints what JOB runs: one
#       line per `cargo test` it makes, its target and the test harness's
#       arguments (needs no toolchain)
#   scripts/sanitize.sh --check                checks every file's markers
set -euo pipefail
cd "$(dirname "$0")/.."
triple=x86_64-unknown-linux-gnu


# The markers of one test file as `cargo test` arguments for JOB (asan or
# tsan): "--test NAME" when the file is in the job, with "-- --skip TEST"
# for each test left out; "--test NAME -- TEST..." for the tests of a file
# that is not in the job but marked for it; nothing when none is. Fails,
# naming the line, on a missing or malformed marker.
file_selection() {
  local job=$1 file=$2
  awk -v job="$job" -v name="$(basename "$file" .rs)" '
    function fail(msg) {
      printf "%s:%d: %s\n", FILENAME, FNR, msg > "/dev/stderr"
      bad = 1
      exit 1
    }
    function known(list,   n, a, i) {
      n = split(list, a, " ")
      for (i = 1; i <= n; i++) if (a[i] != "asan" && a[i] != "tsan") return 0
      return n > 0
    }
    function has(list, j,   n, a, i) {
      n = split(list, a, " ")
      for (i = 1; i <= n; i++) if (a[i] == j) return 1
      return 0
    }
    /^\/\/! sanitize:/ {
      if (marked) fail("a second //! sanitize: line")
      spec = $0
      sub(/^\/\/! sanitize: */, "", spec)
      if (spec ~ /^none: [^ ]/) files_jobs = ""
      else if (known(spec)) files_jobs = spec
      else fail("expected \"//! sanitize: \" and asan, tsan or both, or \"none: WHY\"")
      marked = 1
      next
    }
    /^[ \t]*\/\/ sanitize:/ {
      if (!marked) fail("the //! sanitize: line of the file comes first")
      if (pending != "") fail("a second marker for one test")
      spec = $0
      sub(/^[ \t]*\/\/ sanitize: */, "", spec)
      pending = "add"
      if (spec ~ /^not /) {
        pending = "not"
        sub(/^not /, "", spec)
        if (spec !~ /: [^ ]/) fail("expected \"// sanitize: not JOB: WHY\"")
      }
      jobs = spec
      sub(/:.*/, "", jobs)
      if (!known(jobs)) fail("expected asan, tsan or both in \"" $0 "\"")
      next
    }
    pending != "" && /^[ \t]*((pub|unsafe|const|async)[ \t]+)*fn[ \t]+[A-Za-z0-9_]+/ {
      test = $0
      sub(/^[ \t]*((pub|unsafe|const|async)[ \t]+)*fn[ \t]+/, "", test)
      sub(/[^A-Za-z0-9_].*$/, "", test)
      n = split(jobs, js, " ")
      for (i = 1; i <= n; i++) {
        if (pending == "not" && !has(files_jobs, js[i])) fail("not " js[i] ": the file is not run under " js[i])
        if (pending == "add" && has(files_jobs, js[i])) fail(js[i] ": the whole file is run under " js[i])
        if (js[i] == job) picked = picked " " (pending == "not" ? "--skip " : "") test
      }
      pending = ""
      next
    }
    pending != "" && !/^[ \t]*(#\[|\/\/)/ { fail("a // sanitize: marker stands right above a test function") }
    END {
      if (bad) exit 1
      if (pending != "") fail("a // sanitize: marker with no test function after it")
      if (!marked) fail("no \"//! sanitize:\" line (asan, tsan, both, or none: WHY)")
      if (has(files_jobs, job)) print "--test " name (picked == "" ? "" : " --" picked)
      else if (picked != "") print "--test " name " --" picked
    }
  ' "$file"
}

# What JOB runs: one line per `cargo test`, its target selection and the
# harness arguments after "--".
selection() {
  local job=$1 file
  case "$job" in
    asan | tsan)
      [ "$job" != asan ] || echo "--lib"
      for file in tests/*.rs; do
        file_selection "$job" "$file"
      done
      ;;
    # Unit tests that miri cannot run, or that take minutes interpreted,
    # carry #[cfg_attr(miri, ignore = "...")] beside them.
    miri) echo "--lib" ;;
    *)
      echo "sanitize.sh: unknown job $job (asan, tsan, miri)" >&2
      return 2
      ;;
  esac
}

case "${1:-}" in
  --list)
    [ $# -eq 2 ] || { echo "usage: scripts/sanitize.sh --list asan|tsan|miri" >&2; exit 2; }
    selection "$2"
    exit
    ;;
  --check)
    selection asan >/dev/null
    selection tsan >/dev/null
    exit
    ;;
esac
jobs=("$@")
[ ${#jobs[@]} -gt 0 ] || jobs=(asan tsan miri)
# Unknown jobs and bad markers fail here, before anything is installed.
for job in "${jobs[@]}"; do
  selection "$job" >/dev/null
done

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

# Runs what `selection JOB` gives: first one build of every target (in
# parallel), then one `cargo test` per line, each with its own filters.
run_selection() {
  local job=$1
  shift
  local selected="$log_dir/$job.selection" line targets=() args
  selection "$job" >"$selected"
  echo "sanitize $job runs:" | tee -a "$log_dir/$job.log"
  sed 's/^/  /' "$selected" | tee -a "$log_dir/$job.log"
  while read -r line; do
    read -ra args <<<"${line%% -- *}"
    targets+=("${args[@]}")
  done <"$selected"
  step "$job" cargo_nightly test "$@" --no-run "${targets[@]}"
  # Built: the tests connect to loopback and choose their proxies
  # themselves, so the caller's proxy variables (which libws reads) go.
  unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
  while read -r line; do
    read -ra args <<<"$line"
    step "$job" cargo_nightly test "$@" --no-fail-fast "${args[@]}"
  done <"$selected"
}

# A build that lost its instrumentation would pass quietly: check that a
# test binary of the job has the sanitizer's entry point.
check_instrumented() {
  local job=$1 symbol=$2 test binary=""
  test=$(sed -n 's/^--test \([A-Za-z0-9_]*\).*/\1/p' "$log_dir/$job.selection" | head -n 1)
  [ -z "$test" ] ||
    binary=$(find "target/$job/$triple/debug/deps" -maxdepth 1 -type f -executable -name "$test-*" | head -n 1)
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
  run_selection asan "${cargo[@]}"
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
  run_selection tsan -Zbuild-std --target "$triple" --target-dir target/tsan
  check_instrumented tsan __tsan_init
  unset TSAN_OPTIONS RUSTFLAGS LIBWS_TEST_TIME_SCALE
  report tsan "$status" "$log_dir/tsan.log" "$log_dir/tsan.skips"
}

miri() {
  status=0
  echo "== sanitize miri"
  local args
  read -ra args <<<"$(selection miri)"
  # Isolation off: the tests read the clock and take random masks.
  MIRIFLAGS=-Zmiri-disable-isolation step miri cargo_nightly miri test --target-dir target/miri "${args[@]}"
  report miri "$status" "$log_dir/miri.log" "$log_dir/miri.skips"
}

install_nightly
for job in "${jobs[@]}"; do
  "$job"
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
