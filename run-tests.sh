#!/usr/bin/env bash
# Runs every test: the Rust unit and integration tests (the cluster tests start their own
# redis-server), then the compatibility suite (pusher-js, laravel-echo, the Node and Python
# Pusher SDKs, headless Chromium), which installs what it needs (npm ci, a Python venv,
# Debian's chromium) by itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# The cluster tests need Debian's redis-server; a missing one fails the run, never skips it.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (apt-get)"
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required by the cluster tests"; exit 1; }

echo "== cargo build --release"
cargo build --release --workspace --locked --bins --examples
echo "== cargo test --release (unit + integration tests)"
cargo test --release --workspace --locked
echo "== compatibility suite (real client libraries and a browser)"
CRIER_BIN="$PWD/target/release/crier" compat-tests/run.sh
echo "== all tests passed"
