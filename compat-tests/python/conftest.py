"""Fixtures for the Python SDK tests: a Crier process and a Node helper that holds pusher-js
clients open (Python has no maintained protocol-7 client), both stopped reliably afterwards."""

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

COMPAT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(COMPAT_DIR)
CRIER_BIN = os.environ.get("CRIER_BIN") or os.path.join(REPO_ROOT, "target", "release", "crier")
APP_ID, APP_KEY, APP_SECRET = "4242", "compat-key", "compat-secret"
LISTENING_RE = re.compile(r"listening on [^\s:]+:(\d+)")


def _record_pid(pid):
    path = os.environ.get("CRIER_COMPAT_PIDFILE")
    if path:
        with open(path, "a") as f:
            f.write("%d\n" % pid)


class Lines:
    """Collects a process's output lines on a thread; tests wait on them with a timeout. Lines
    are never consumed: each wait scans from `start`, so the order of arrival does not matter."""

    def __init__(self, stream):
        self.all = []
        self.ended = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream):
        for line in iter(stream.readline, ""):
            with self.cond:
                self.all.append(line)
                self.cond.notify_all()
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def wait_for(self, predicate, timeout, what, start=0):
        """Returns (index, value) of the first line from `start` for which predicate is truthy."""
        deadline = time.monotonic() + timeout
        i = start
        with self.cond:
            while True:
                while i < len(self.all):
                    result = predicate(self.all[i])
                    if result:
                        return i, result
                    i += 1
                left = deadline - time.monotonic()
                if self.ended:
                    raise AssertionError("process ended while waiting for %s; output:\n%s" % (what, "".join(self.all[-50:])))
                if left <= 0:
                    raise AssertionError("timed out after %ss waiting for %s; output:\n%s" % (timeout, what, "".join(self.all[-50:])))
                self.cond.wait(left)


def _stop(proc, grace=8):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def crier():
    with start_crier() as c:
        yield c


@contextlib.contextmanager
def start_crier(env=None):
    """Runs a Crier with the test app until the block ends; yields {"port", "proc", "lines"}.
    `env` adds (or replaces) environment variables of the Crier process (e.g.
    CRIER_APP_WEBHOOKS)."""
    if not os.path.exists(CRIER_BIN):
        pytest.fail("Crier binary not found at %s (cargo build --release, or set CRIER_BIN)" % CRIER_BIN)
    tmp = tempfile.mkdtemp(prefix="crier-compat-py-")
    config = os.path.join(tmp, "crier.toml")
    with open(config, "w") as f:
        f.write('[[apps]]\nid = "%s"\nkey = "%s"\nsecret = "%s"\nclient_events = true\n' % (APP_ID, APP_KEY, APP_SECRET))
    proc = subprocess.Popen(
        [CRIER_BIN, "--host", "127.0.0.1", "--port", "0", "--config", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=dict(os.environ, **env) if env else None,
    )
    _record_pid(proc.pid)
    try:
        lines = Lines(proc.stdout)
        _, port = lines.wait_for(lambda l: (m := LISTENING_RE.search(l)) and int(m.group(1)), 15, "listening on HOST:PORT")
        yield {"port": port, "proc": proc, "lines": lines}
    finally:
        _stop(proc)


def sdk(crier, secret=APP_SECRET, app_id=APP_ID, key=APP_KEY):
    import pusher

    return pusher.Pusher(app_id=app_id, key=key, secret=secret, host="127.0.0.1", port=crier["port"], ssl=False, timeout=5)


@pytest.fixture(scope="session")
def held(crier):
    """pusher-js clients on a public, a private and a presence channel (two users, three sockets)."""
    tag = uuid.uuid4().hex[:8]
    names = {
        "public": "py-public-" + tag,
        "private": "private-py-" + tag,
        "presence": "presence-py-" + tag,
        "other": "py-other-" + tag,
    }
    spec = [
        {"user": {"user_id": "py-1", "user_info": {"name": "One"}}, "channels": [names["public"], names["private"], names["presence"]]},
        {"user": {"user_id": "py-1", "user_info": {"name": "One"}}, "channels": [names["public"], names["presence"]]},
        {"user": {"user_id": "py-2", "user_info": {"name": "Two"}}, "channels": [names["public"], names["presence"], names["other"]]},
    ]
    with holder(crier, spec, timeout=20) as h:
        h["names"] = names
        yield h


@contextlib.contextmanager
def holder(crier, spec, timeout=10):
    """Runs lib/hold-clients.mjs with `spec` against `crier` until the block ends. Yields
    {"lines", "socket_ids", "proc"} once every client is ready (signed in and subscribed)."""
    proc = subprocess.Popen(
        ["node", os.path.join(COMPAT_DIR, "lib", "hold-clients.mjs"), str(crier["port"]), json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        cwd=COMPAT_DIR,
    )
    try:
        lines = Lines(proc.stdout)

        def ready(line):
            try:
                msg = json.loads(line)
            except ValueError:
                return None
            if msg.get("ready") is False:
                raise AssertionError("pusher-js holder failed: %s" % msg.get("error"))
            return msg if msg.get("ready") else None

        _, info = lines.wait_for(ready, timeout, "pusher-js clients to sign in and subscribe")
        yield {"lines": lines, "socket_ids": info["socket_ids"], "proc": proc}
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_line(held, predicate, what, timeout=5, start=0):
    """Waits for any JSON line from the holder (events, states, closes) matching `predicate`."""

    def match(line):
        try:
            msg = json.loads(line)
        except ValueError:
            return None
        return msg if isinstance(msg, dict) and predicate(msg) else None

    return held["lines"].wait_for(match, timeout, what, start)


def parse_event(line):
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) and "event" in msg else None


def wait_event(held, predicate, what, timeout=5, start=0):
    """Waits for an event line from the holder matching `predicate`; returns (index, event)."""

    def match(line):
        msg = parse_event(line)
        return msg if msg is not None and predicate(msg) else None

    return held["lines"].wait_for(match, timeout, what, start)


def events_between(held, start, end):
    """The holder's event lines with index in [start, end)."""
    return [m for m in (parse_event(l) for l in held["lines"].all[start:end]) if m is not None]
