# Sourced by the scripts that need the nightly toolchain (fuzzing,
# sanitizers, miri). The toolchain is pinned so that a new nightly cannot
# change what a run finds; `ensure_nightly [component...]` installs it and
# the components asked for, through rustup, when they are missing.
NIGHTLY="${LIBWS_NIGHTLY:-nightly-2026-05-20}"

ensure_nightly() {
  if ! rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$NIGHTLY" --profile minimal
  fi
  local c
  for c in "$@"; do
    if ! rustup component list --toolchain "$NIGHTLY" --installed | grep -q "^$c"; then
      rustup component add --toolchain "$NIGHTLY" "$c"
    fi
  done
}
