# Sourced by test.sh and soak.sh: installs the real peers (latest releases,
# from PyPI and npm) into target/peers. Under CI=true they are always
# installed; elsewhere a present install is reused.
peers=target/peers

install_python_peer() {
  if [ "${CI:-}" = true ] || ! PYTHONPATH="$peers/python" python3 -c 'import websockets' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$peers/python" websockets
  fi
}

install_node_peer() {
  if [ "${CI:-}" = true ] || [ ! -d "$peers/node/node_modules/ws" ]; then
    mkdir -p "$peers/node"
    npm install --silent --no-audit --no-fund --prefix "$peers/node" ws@latest
  fi
}
