#!/usr/bin/env bash
# Builds libws, starts the local echo server (examples/echo_server.rs) on a
# free port, and runs the C example examples/echo.c against it.
set -euo pipefail
cd "$(dirname "$0")/.."
# The example first: built with it, the library would carry the test hooks
# (the `testing` feature reaches every build with dev-dependencies). The
# library alone last, so that target/release holds the shipped one.
cargo build --release --example echo_server
cargo build --release --lib
mkdir -p target/demo
# Linked against libws.a, so the demo runs without installing anything;
# scripts/static-libs.txt says what that takes from the system.
read -ra static_libs < <(grep -v -e '^#' -e '^$' scripts/static-libs.txt)
cc -std=c99 -Wall -Wextra -pedantic -I include examples/echo.c -o target/demo/echo \
   target/release/libws.a "${static_libs[@]}"
target/release/examples/echo_server 0 > target/demo/server.log &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
url=""
for _ in $(seq 1 200); do
  url=$(sed -n 's/^listening on //p' target/demo/server.log)
  [ -n "$url" ] && break
  sleep 0.05
done
[ -n "$url" ] || { echo "demo: the echo server did not start" >&2; exit 1; }
echo "demo: echo server at $url"
target/demo/echo "$url"
