#!/usr/bin/env bash
# Prints the suite's closing line, "total: N passed, N failed, N skipped",
# from the output of `cargo test` (LOG) and the directory in which each test
# that could not run left one note (SKIPS; tests/common/mod.rs, record_skip).
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
awk -v skipped="$skipped" '
  /^test result:/ {
    for (i = 1; i < NF; i++) {
      if ($(i+1) ~ /^passed/) p += $i
      if ($(i+1) ~ /^failed/) f += $i
      if ($(i+1) ~ /^ignored/) ignored += $i
    }
  }
  END { printf "total: %d passed, %d failed, %d skipped\n", p - skipped, f, skipped + ignored }' "$log"
