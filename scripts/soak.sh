#!/usr/bin/env bash
# The soak (tests/soak.rs) for SOAK_SECONDS (default 300): hundreds of
# connections at a time through the fault-injecting proxy to the Python
# `websockets` peer, installed into target/peers/python as scripts/test.sh
# installs it (always under CI=true, else when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

peers=target/peers
if [ "${CI:-}" = true ] || ! PYTHONPATH="$peers/python" python3 -c 'import websockets' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$peers/python" websockets
fi

# A debug build, as `make test` leaves it: no second build of every crate.
cargo build --test soak
# Without glibc's per-thread caches: with ~900 threads they keep freed
# chunks that mallinfo2 counts as in use, and heap and RSS creep up by
# 10-20% over minutes with no leak (flat with the caches off).
GLIBC_TUNABLES=glibc.malloc.tcache_count=0 SOAK_SECONDS="${SOAK_SECONDS:-300}" cargo test --test soak
