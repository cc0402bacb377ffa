"""The Python SDK's terminate_user_connections against signed-in pusher-js clients. The SDK posts
to /users/{id}/terminate_connections WITHOUT the /apps/{app_id} prefix (and signs that path)."""

import json
import uuid

from conftest import events_between, holder, sdk, wait_event, wait_line


def test_terminate_user_connections(crier):
    tag = uuid.uuid4().hex[:8]
    alice, bob, pub = "py-alice-" + tag, "py-bob-" + tag, "py-users-" + tag
    spec = [
        {"signin": {"id": alice}, "channels": [pub]},
        {"signin": {"id": alice}, "channels": [pub]},
        {"signin": {"id": bob}, "channels": [pub]},
    ]
    with holder(crier, spec) as h:
        start = len(h["lines"].all)
        result = sdk(crier).terminate_user_connections(alice)
        assert result == {}, result

        for i in (0, 1):
            _, err = wait_event(h, lambda m, i=i: m["client"] == i and m["event"] == "pusher:error", "pusher:error on alice's socket %d" % i, start=start)
            assert (err["data"] or {}).get("code") == 4009, err
            _, close = wait_line(h, lambda m, i=i: m.get("client") == i and "close" in m, "close of alice's socket %d" % i, start=start)
            assert close["close"]["code"] == 4009, close
            wait_line(h, lambda m, i=i: m.get("client") == i and m.get("state") in ("disconnected", "failed"), "alice's client %d disconnected" % i, start=start)

        # Bob is untouched: he still receives, and got no error or close.
        sentinel = uuid.uuid4().hex
        sdk(crier).trigger(pub, "py-sentinel", {"tag": sentinel})
        end, _ = wait_event(h, lambda m: m["client"] == 2 and m["event"] == "py-sentinel" and m["data"].get("tag") == sentinel, "sentinel on bob", start=start)
        bob_events = [m for m in events_between(h, start, end) if m["client"] == 2]
        assert [m for m in bob_events if m["event"] == "pusher:error"] == [], bob_events
        bob_other = [json.loads(l) for l in h["lines"].all[start:end] if '"client":2' in l and ('"close"' in l or '"state"' in l)]
        assert bob_other == [], bob_other
