#!/usr/bin/env bash
# Runs Crier's compatibility suite: Node (pusher-js, laravel-echo, pusher SDK), Python (pusher SDK)
# and a headless-Chromium page (pusher-js browser build). Installs what it can, says what it
# cannot, and exits non-zero if anything is missing or any suite fails.
#
#   compat-tests/run.sh                 # uses <repo>/target/release/crier
#   CRIER_BIN=/path/to/crier compat-tests/run.sh
#   compat-tests/run.sh node python     # only some suites (node, python, browser)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
export CRIER_BIN="${CRIER_BIN:-$REPO/target/release/crier}"
export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
export PYTHONDONTWRITEBYTECODE=1
export NO_UPDATE_NOTIFIER=1 NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false
NODE_MIN_MAJOR=20

say() { printf '[compat] %s\n' "$*"; }
die() { printf '[compat] ERROR: %s\n' "$*" >&2; exit 1; }

SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(node python browser)
for s in "${SUITES[@]}"; do
  case "$s" in node | python | browser) ;; *) die "unknown suite '$s' (use node, python, browser)" ;; esac
done
wants() { local s; for s in "${SUITES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

# ---------------------------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------------------------
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else return 1; fi
}
APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
    APT_UPDATED=1
  fi
  say "apt-get install -y $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || return 1
}

[ -x "$CRIER_BIN" ] || die "Crier binary not found or not executable at $CRIER_BIN. Build it first (cargo build --release) or set CRIER_BIN. This script builds nothing itself."

MISSING=()
node_ok() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
    [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -ge "$NODE_MIN_MAJOR" ]
}
if ! node_ok; then
  apt_install nodejs npm || true
  node_ok || MISSING+=("Node.js >= $NODE_MIN_MAJOR with npm (found: $(node --version 2>/dev/null || echo none); install it from nodejs.org or NodeSource)")
fi
if wants python; then
  if ! command -v python3 >/dev/null 2>&1; then apt_install python3 python3-venv || true; fi
  if ! command -v python3 >/dev/null 2>&1; then
    MISSING+=("python3 (apt-get install python3 python3-venv)")
  elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv || true
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || MISSING+=("the python3 venv module (apt-get install python3-venv)")
  fi
fi
if wants browser && [ ! -x "$CHROMIUM_BIN" ]; then
  apt_install chromium || true
  [ -x "$CHROMIUM_BIN" ] || MISSING+=("Chromium at $CHROMIUM_BIN (apt-get install chromium, or set CHROMIUM_BIN)")
fi
# browser/tls.test.mjs makes its test certificates with the openssl CLI.
if wants browser && ! command -v openssl >/dev/null 2>&1; then
  apt_install openssl || true
  command -v openssl >/dev/null 2>&1 || MISSING+=("the openssl CLI for browser/tls.test.mjs (apt-get install openssl)")
fi
# node/cluster.test.mjs starts its own redis-server (and fails, never skips, without one).
if wants node && [ -z "${REDIS_SERVER_BIN:-}" ] && ! command -v redis-server >/dev/null 2>&1; then
  apt_install redis-server || true
  command -v redis-server >/dev/null 2>&1 || MISSING+=("redis-server for node/cluster.test.mjs (apt-get install redis-server, or set REDIS_SERVER_BIN)")
fi
if [ ${#MISSING[@]} -gt 0 ]; then
  for m in "${MISSING[@]}"; do printf '[compat] MISSING: %s\n' "$m" >&2; done
  die "cannot run the compatibility tests without the above"
fi

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

# npm ci only when the lock file changed since the last install (npm ci wipes node_modules).
cd "$HERE"
LOCK_HASH="$(hash_of package-lock.json)"
if [ "$(cat node_modules/.compat-lock-hash 2>/dev/null || true)" != "$LOCK_HASH" ]; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed in $HERE"
  echo "$LOCK_HASH" >node_modules/.compat-lock-hash
fi

if wants python; then
  REQ_HASH="$(hash_of requirements.txt)"
  if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.compat-req-hash 2>/dev/null || true)" != "$REQ_HASH" ]; then
    say "creating .venv and installing requirements.txt"
    rm -rf .venv
    python3 -m venv .venv || die "python3 -m venv failed"
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt || die "pip install -r requirements.txt failed"
    echo "$REQ_HASH" >.venv/.compat-req-hash
  fi
fi

# ---------------------------------------------------------------------------------------------
# Every Crier (and redis-server, for the cluster test) the tests start is listed here; whatever
# is still running at exit is killed.
# ---------------------------------------------------------------------------------------------
export CRIER_COMPAT_PIDFILE CRIER_COMPAT_REDIS_PIDFILE
CRIER_COMPAT_PIDFILE="$(mktemp "${TMPDIR:-/tmp}/crier-compat-pids.XXXXXX")"
CRIER_COMPAT_REDIS_PIDFILE="$(mktemp "${TMPDIR:-/tmp}/crier-compat-redis-pids.XXXXXX")"
REDIS_SERVER_EXE="$(readlink -f "${REDIS_SERVER_BIN:-$(command -v redis-server || echo /nonexistent)}" 2>/dev/null || true)"
kill_leftovers() { # pidfile, executable, label
  local pid
  while read -r pid; do
    [ -n "$pid" ] || continue
    # Only a process that still runs that executable (the pid may have been reused).
    if [ -n "$2" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" = "$2" ]; then
      kill -KILL "$pid" 2>/dev/null || true
      say "killed leftover $3 (pid $pid)"
    fi
  done <"$1"
  rm -f "$1"
}
cleanup() {
  kill_leftovers "$CRIER_COMPAT_PIDFILE" "$(readlink -f "$CRIER_BIN")" crier
  kill_leftovers "$CRIER_COMPAT_REDIS_PIDFILE" "$REDIS_SERVER_EXE" redis-server
}
trap cleanup EXIT

say "crier: $CRIER_BIN"
pkg_version() { node -p "JSON.parse(require('fs').readFileSync('node_modules/$1/package.json', 'utf8')).version"; }
say "node $(node --version), pusher-js $(pkg_version pusher-js), laravel-echo $(pkg_version laravel-echo), pusher (node) $(pkg_version pusher), playwright-core $(pkg_version playwright-core), $("$CHROMIUM_BIN" --version 2>/dev/null | head -1 || true), $("${REDIS_SERVER_BIN:-redis-server}" --version 2>/dev/null | cut -d' ' -f1-3 || true)"

declare -A RESULT
FAILED=0
run_suite() {
  local name="$1" limit="$2"
  shift 2
  say "=== $name: $*"
  local start=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  if [ "$rc" = 0 ]; then
    RESULT[$name]="PASS"
  else
    [ "$rc" = 124 ] && say "$name: timed out after ${limit}s"
    RESULT[$name]="FAIL (exit $rc)"
    FAILED=1
  fi
  say "=== $name: ${RESULT[$name]} in $((SECONDS - start))s"
}

if wants node; then
  run_suite node 180 node --test --test-reporter=spec --test-concurrency=1 node/*.test.mjs
fi
if wants python; then
  say "python $(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'), pusher (python) $(.venv/bin/python -c 'import pusher.version as v; print(v.VERSION)' 2>/dev/null || .venv/bin/pip show pusher | sed -n 's/^Version: //p')"
  run_suite python 120 .venv/bin/python -m pytest -p no:cacheprovider -v python/
fi
if wants browser; then
  run_suite browser 120 node --test --test-reporter=spec --test-concurrency=1 browser/*.test.mjs
fi

echo
for s in "${SUITES[@]}"; do printf '[compat] %-8s %s\n' "$s" "${RESULT[$s]}"; done
if [ "$FAILED" != 0 ]; then
  say "compatibility suite FAILED"
  exit 1
fi
say "compatibility suite passed"
