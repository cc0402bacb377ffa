#!/usr/bin/env bash
# Runs every test: the Rust unit and integration tests, then the compatibility suite
# (pusher-js, laravel-echo, the Node and Python Pusher SDKs, headless Chromium), which
# installs what it needs (npm ci, a Python venv, Debian's chromium) by itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

echo "== cargo build --release"
cargo build --release --workspace --locked
echo "== cargo test --release (unit + integration tests)"
cargo test --release --workspace --locked
echo "== compatibility suite (real client libraries and a browser)"
CRIER_BIN="$PWD/target/release/crier" compat-tests/run.sh
echo "== all tests passed"
