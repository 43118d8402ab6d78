#!/usr/bin/env bash
# Runs the benchmarks (`make bench`): throughput, round trips, connects,
# fan-in, many connections and idle memory against tungstenite, then
# compression, also against the clients of Python `websockets` and Node.js
# `ws`, installed into target/peers as the tests install them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/peers.sh
install_python_peer || echo "bench.sh: Python websockets could not be installed; its row is skipped" >&2
install_node_peer || echo "bench.sh: Node.js ws could not be installed; its row is skipped" >&2
cargo bench --bench throughput
cargo bench --bench compression
