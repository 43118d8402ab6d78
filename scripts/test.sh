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
# The summary line adds up every test binary's counts.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
