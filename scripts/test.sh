#!/usr/bin/env bash
# Runs the whole test suite: Rust unit and integration tests, the C and C++
# programs, the header check and the tests against real peers.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --all-targets
cargo test --all-targets
