#!/usr/bin/env bash
# Prints the suite's closing line, "total: N passed, N failed, N skipped",
# from the output of `cargo test` (LOG) and the directory in which each test
# that could not run left one note (SKIPS; tests/support/peers.rs, record_skip).
# Such a test returned early and libtest counted it as passed: here it counts
# as skipped, and its reason is shown. Tests libtest ignored count as skipped.
#   scripts/summary.sh LOG SKIPS
set -euo pipefail
log=$1
skips=$2
skipped=0
if [ -d "$skips" ]; then
  for note in "$skips"/*; do
    [ -f "$note" ] || continue
    skipped=$((skipped + 1))
    printf 'SKIPPED: %s\n' "$(cat "$note")"
  done
fi
# A test binary that starts ("Running ...") but prints no "test result:"
# line died (a signal, an abort): it counts as one failure, named.
awk -v skipped="$skipped" '
  function crashed() {
    if (running != "") { printf "CRASHED: %s (no test result: killed by a signal or aborted)\n", running; f += 1 }
    running = ""
  }
  /^ *Running / { crashed(); running = $0; sub(/^ *Running /, "", running) }
  /^ *Doc-tests / { crashed() }
  /^test result:/ {
    running = ""
    for (i = 1; i < NF; i++) {
      if ($(i+1) ~ /^passed/) p += $i
      if ($(i+1) ~ /^failed/) f += $i
      if ($(i+1) ~ /^ignored/) ignored += $i
    }
  }
  END { crashed(); printf "total: %d passed, %d failed, %d skipped\n", p - skipped, f, skipped + ignored }' "$log"
