#!/usr/bin/env bash
# Runs the whole test suite: Rust unit and integration tests, the C and C++
# programs, the header check, the conformance server and the real peers.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers for tests/interop.rs (latest releases, from PyPI and npm),
# installed into target/peers. Under CI=true they are always installed and a
# failed install fails the run; elsewhere a present install is reused.
peers=target/peers
install_peers() {
  if [ "${CI:-}" = true ] || ! PYTHONPATH="$peers/python" python3 -c 'import websockets' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$peers/python" websockets
  fi
  if [ "${CI:-}" = true ] || [ ! -d "$peers/node/node_modules/ws" ]; then
    mkdir -p "$peers/node"
    npm install --silent --no-audit --no-fund --prefix "$peers/node" ws@latest
  fi
}
if [ "${CI:-}" = true ]; then
  install_peers
else
  install_peers || echo "test.sh: could not install the interop peers; tests/interop.rs will skip them" >&2
fi

cargo build --all-targets
# The README's build (tests/c_programs.rs follows its route without installing).
make build
# The summary line adds up every test binary's counts; a test that could not
# run (a missing peer, outside CI) leaves a note in $LIBWS_SKIP_DIR and is
# counted as skipped, not passed.
log=$(mktemp)
skips=$(mktemp -d)
trap 'rm -rf "$log" "$skips"' EXIT
export LIBWS_SKIP_DIR="$skips"
set +e
cargo test --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
scripts/summary.sh "$log" "$skips"
exit "$status"
