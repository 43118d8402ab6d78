#!/usr/bin/env bash
# Runs each fuzz target in fuzz/ for FUZZ_SECONDS (default 60) with
# cargo-fuzz (libFuzzer, the pinned nightly toolchain of scripts/nightly.sh;
# both are installed when missing). Targets: the names given as
# arguments, or all of them. New inputs go to fuzz/corpus/<target>
# (not committed); the committed seeds in fuzz/seeds/<target> are read too.
# A crash stops the run with the input saved in fuzz/artifacts/<target>/;
# replay it with `cargo +<that nightly> fuzz run <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames handshake url inflate proxy)

. scripts/nightly.sh
ensure_nightly
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

cargo "+$NIGHTLY" fuzz build
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== fuzz target $t for ${seconds}s"
  log=$(mktemp)
  set +e
  cargo "+$NIGHTLY" fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 | tee "$log" | grep -v -e '^#[0-9]*\s*\(NEW\|REDUCE\|pulse\)' -e '^"' -e 'dictionary. #' -e 'NEW_FUNC'
  status=${PIPESTATUS[0]}
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rm -f "$log"
  echo "== $t: ${runs:-?} runs in ${seconds}s, ${speed:-?} per second, exit $status"
  [ "$status" -eq 0 ] || exit "$status"
done
