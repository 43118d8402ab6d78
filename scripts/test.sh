#!/usr/bin/env bash
# Runs the whole test suite: Rust unit and integration tests, the C and C++
# programs, the header check, the conformance server and the real peers.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers for tests/interop.rs, the TLS and fault tests (scripts/peers.sh).
# Under CI=true a failed install fails the run.
. scripts/peers.sh
install_peers() {
  install_python_peer
  install_node_peer
}
if [ "${CI:-}" = true ]; then
  install_peers
else
  install_peers || echo "test.sh: could not install the interop peers; tests/interop.rs will skip them" >&2
fi

# Every test file says which sanitizers run it (scripts/sanitize.sh):
# a file without the line would drop out of `make sanitize` unnoticed.
scripts/sanitize.sh --check
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
# Built: the tests connect to loopback and choose their proxies themselves,
# so the caller's proxy variables (which libws reads) go.
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
set +e
cargo test --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
scripts/summary.sh "$log" "$skips"
exit "$status"
