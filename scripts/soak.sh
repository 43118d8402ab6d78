#!/usr/bin/env bash
# The soak (tests/soak.rs) for SOAK_SECONDS (default 300): hundreds of
# connections at a time through the fault-injecting proxy to the Python
# `websockets` peer, installed into target/peers/python by scripts/peers.sh
# (always under CI=true, else when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/peers.sh
install_python_peer

# A debug build, as `make test` leaves it: no second build of every crate.
cargo build --test soak
# Built: the soak connects to loopback; the caller's proxy variables go.
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
# Without glibc's per-thread caches: with ~900 threads they keep freed
# chunks that mallinfo2 counts as in use, and heap and RSS creep up by
# 10-20% over minutes with no leak (flat with the caches off).
GLIBC_TUNABLES=glibc.malloc.tcache_count=0 SOAK_SECONDS="${SOAK_SECONDS:-300}" cargo test --test soak
