"""Webhooks, checked by the official Python server SDK (pusher on PyPI): a local http.server
receives what Crier posts and hands each request to `pusher.Pusher(...).validate_webhook(key,
signature, body)`. pusher-js clients (lib/hold-clients.mjs, and a small pusher-js script for a
client event) produce channel_occupied / channel_vacated, member_added / member_removed and
client_event. Every webhook must validate to its parsed body; a changed body, a wrong secret or a
wrong key must give None."""

import json
import os
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pusher
import pytest

from conftest import APP_ID, APP_KEY, APP_SECRET, COMPAT_DIR, Lines, holder, start_crier, wait_event

DELAY_MS = 300  # channel_vacated / member_removed debounce of this module's server


def validator(secret=APP_SECRET, key=APP_KEY):
    return pusher.Pusher(app_id=APP_ID, key=key, secret=secret, host="127.0.0.1", ssl=False)


class Receiver:
    """Records every POST as {path, headers, body (bytes), at, result}; `result` is what
    validate_webhook returned for it."""

    def __init__(self):
        self.hooks = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                    "at": time.time(),
                }
                try:
                    hook["result"] = validator().validate_webhook(
                        key=self.headers.get("X-Pusher-Key"),
                        signature=self.headers.get("X-Pusher-Signature"),
                        body=body,
                    )
                except Exception as e:  # reported by the tests, never swallowed
                    hook["error"] = repr(e)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with receiver.cond:
                    receiver.hooks.append(hook)
                    receiver.cond.notify_all()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def events(self):
        """[(event, hook)] of every request received so far, in arrival order."""
        with self.cond:
            hooks = list(self.hooks)
        out = []
        for hook in hooks:
            try:
                events = json.loads(hook["body"])["events"]
            except (ValueError, KeyError, TypeError):
                events = []
            out.extend((ev, hook) for ev in events)
        return out

    def describe(self):
        with self.cond:
            return "\n".join("  %s result=%s %s" % (h["path"], "ok" if h.get("result") else h.get("result", h.get("error")), h["body"].decode("utf-8", "replace")) for h in self.hooks[-30:]) or "  (none)"

    def wait(self, predicate, what, timeout=5.0):
        """The first (event, hook) received (already or later) for which predicate(event) holds."""
        deadline = time.monotonic() + timeout
        while True:
            for ev, hook in self.events():
                if predicate(ev):
                    return ev, hook
            with self.cond:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %ss waiting for webhook %s; received:\n%s" % (timeout, what, self.describe()))
                self.cond.wait(min(left, 0.2))

    def named(self, name, channel):
        return [ev for ev, _ in self.events() if ev.get("name") == name and ev.get("channel") == channel]


def assert_validated(hook):
    """validate_webhook returned the parsed body (not None), and the request looks as Pusher's."""
    show = "%s %s" % (hook["headers"], hook["body"])
    assert "error" not in hook, "validate_webhook raised %s for %s" % (hook.get("error"), show)
    assert hook["result"] is not None, "validate_webhook returned None for %s" % show
    assert hook["result"] == json.loads(hook["body"]), show
    assert hook["headers"].get("content-type") == "application/json", show
    assert hook["headers"].get("x-pusher-key") == APP_KEY, show
    assert isinstance(hook["result"]["time_ms"], int), show
    assert abs(hook["result"]["time_ms"] / 1000.0 - hook["at"]) < 10, "time_ms far from the arrival: %s" % show


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def hooked(receiver):
    """A Crier whose app posts every webhook to `receiver`."""
    env = {
        "CRIER_APP_WEBHOOKS": json.dumps([{"url": "http://127.0.0.1:%d/hook" % receiver.port}]),
        "CRIER_WEBHOOK_DELAY_MS": str(DELAY_MS),
        "CRIER_WEBHOOK_BATCH_WINDOW_MS": "50",
        "CRIER_WEBHOOK_RETRY_FIRST_MS": "200",
        "CRIER_WEBHOOK_TIMEOUT_MS": "2000",
    }
    with start_crier(env=env) as c:
        yield c


def tag():
    return uuid.uuid4().hex[:8]


def test_channel_occupied_and_vacated(hooked, receiver):
    name = "py-wh-public-" + tag()
    with holder(hooked, [{"channels": [name]}]):
        ev, hook = receiver.wait(lambda e: e.get("name") == "channel_occupied" and e.get("channel") == name, "channel_occupied %s" % name)
        assert_validated(hook)
        assert ev == {"name": "channel_occupied", "channel": name}
        left = time.time()
    ev, hook = receiver.wait(
        lambda e: e.get("name") == "channel_vacated" and e.get("channel") == name, "channel_vacated %s" % name, timeout=DELAY_MS / 1000.0 + 5
    )
    assert_validated(hook)
    assert ev == {"name": "channel_vacated", "channel": name}
    assert hook["at"] - left >= (DELAY_MS - 50) / 1000.0, "channel_vacated %.3f s after the clients left" % (hook["at"] - left)
    assert len(receiver.named("channel_occupied", name)) == 1, receiver.describe()
    assert len(receiver.named("channel_vacated", name)) == 1, receiver.describe()


def test_member_added_and_removed(hooked, receiver):
    name = "presence-py-wh-" + tag()
    spec = [
        {"user": {"user_id": "py-wh-1", "user_info": {"name": "One"}}, "channels": [name]},
        {"user": {"user_id": "py-wh-1", "user_info": {"name": "One"}}, "channels": [name]},
        {"user": {"user_id": "py-wh-2", "user_info": {"name": "Two"}}, "channels": [name]},
    ]
    with holder(hooked, spec):
        for user in ("py-wh-1", "py-wh-2"):
            ev, hook = receiver.wait(
                lambda e, u=user: e.get("name") == "member_added" and e.get("channel") == name and e.get("user_id") == u,
                "member_added %s on %s" % (user, name),
            )
            assert_validated(hook)
            assert ev == {"name": "member_added", "channel": name, "user_id": user}
    for user in ("py-wh-1", "py-wh-2"):
        ev, hook = receiver.wait(
            lambda e, u=user: e.get("name") == "member_removed" and e.get("channel") == name and e.get("user_id") == u,
            "member_removed %s on %s" % (user, name),
            timeout=DELAY_MS / 1000.0 + 5,
        )
        assert_validated(hook)
        assert ev == {"name": "member_removed", "channel": name, "user_id": user}
    _, hook = receiver.wait(
        lambda e: e.get("name") == "channel_vacated" and e.get("channel") == name, "channel_vacated %s" % name, timeout=DELAY_MS / 1000.0 + 5
    )
    assert_validated(hook)
    members = sorted("%s %s" % (e["name"], e["user_id"]) for e, _ in receiver.events() if e.get("channel") == name and e["name"].startswith("member_"))
    # One user on two sockets is one member.
    assert members == ["member_added py-wh-1", "member_added py-wh-2", "member_removed py-wh-1", "member_removed py-wh-2"], receiver.describe()


# A pusher-js client that subscribes to argv[2] on the Crier at argv[1], sends one client event
# and prints its socket id; it stays connected until its standard input closes.
CLIENT_EVENT_SCRIPT = r"""
import { pusherClient, connected, subscribe, disconnectAll } from './lib/harness.mjs';
const [port, channel, data] = process.argv.slice(1);
const c = pusherClient({ port: Number(port), wsHost: '127.0.0.1' });
const quit = (code) => { disconnectAll(c); setTimeout(() => process.exit(code), 100); };
process.stdin.on('end', () => quit(0));
process.stdin.resume();
try {
  await connected(c);
  const ch = await subscribe(c, channel);
  const sent = ch.trigger('client-typing', JSON.parse(data));
  process.stdout.write(JSON.stringify({ socket_id: c.connection.socket_id, sent }) + '\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + '\n');
  quit(1);
}
"""


def test_client_event(hooked, receiver):
    name = "private-py-wh-" + tag()
    data = {"who": "python", "n": 2, "text": "h\u00e9llo"}
    with holder(hooked, [{"channels": [name]}]) as held:
        proc = subprocess.Popen(
            ["node", "--input-type=module", "-e", CLIENT_EVENT_SCRIPT, str(hooked["port"]), name, json.dumps(data)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            cwd=COMPAT_DIR,
        )
        try:
            lines = Lines(proc.stdout)
            _, info = lines.wait_for(lambda l: l.startswith("{") and json.loads(l), 10, "the client event sender")
            assert "error" not in info and info["sent"] is True, info
            wait_event(held, lambda m: m["event"] == "client-typing" and m["channel"] == name, "client-typing on the held client")
            ev, hook = receiver.wait(lambda e: e.get("name") == "client_event" and e.get("channel") == name, "client_event on %s" % name)
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
    assert_validated(hook)
    assert isinstance(ev.get("data"), str), "client_event data must be a string: %r" % (ev,)
    assert json.loads(ev["data"]) == data
    assert dict(ev, data=None) == {
        "name": "client_event",
        "channel": name,
        "event": "client-typing",
        "data": None,
        "socket_id": info["socket_id"],
    }


def test_tampered_body_wrong_secret_and_wrong_key_give_none(hooked, receiver):
    name = "py-wh-tamper-" + tag()
    with holder(hooked, [{"channels": [name]}]):
        _, hook = receiver.wait(lambda e: e.get("name") == "channel_occupied" and e.get("channel") == name, "channel_occupied %s" % name)
    assert_validated(hook)
    key, signature, body = hook["headers"]["x-pusher-key"], hook["headers"]["x-pusher-signature"], hook["body"]
    assert validator().validate_webhook(key, signature, body) == json.loads(body)
    assert validator().validate_webhook(key, signature, body.decode("utf-8")) == json.loads(body)
    tampered = body.replace(name.encode(), (name + "x").encode())
    assert tampered != body
    assert validator().validate_webhook(key, signature, tampered) is None
    assert validator().validate_webhook(key, signature, body + b" ") is None
    assert validator(secret="not-the-compat-secret").validate_webhook(key, signature, body) is None
    assert validator(key="other-key").validate_webhook(key, signature, body) is None
    assert validator().validate_webhook("other-key", signature, body) is None


def test_every_webhook_validated(hooked, receiver):
    name = "py-wh-last-" + tag()
    with holder(hooked, [{"channels": [name]}]):
        receiver.wait(lambda e: e.get("name") == "channel_occupied" and e.get("channel") == name, "channel_occupied %s" % name)
    for hook in list(receiver.hooks):
        assert hook["path"] == "/hook", hook
        assert_validated(hook)
