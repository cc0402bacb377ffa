"""The official Python server SDK (pusher on PyPI) against Crier's HTTP API."""

import json
import uuid

import pytest
from pusher.errors import PusherBadAuth, PusherBadRequest

from conftest import events_between, sdk, wait_event


def sentinel(client, held, channel, index):
    """Publishes a sentinel to `channel` and waits for holder client `index` to get it. Returns
    the events that client received before it: a connection gets its messages in order, so
    anything it was sent before the sentinel is among them."""
    tag = uuid.uuid4().hex
    client.trigger(channel, "py-sentinel", {"tag": tag})
    end, _ = wait_event(
        held,
        lambda m: m["client"] == index and m["event"] == "py-sentinel" and m["data"].get("tag") == tag,
        "sentinel on %s for client %d" % (channel, index),
    )
    return [m for m in events_between(held, 0, end) if m["client"] == index]


def test_channels_info_lists_occupied_channels(crier, held):
    body = sdk(crier).channels_info()
    channels = body["channels"]
    assert isinstance(channels, dict), body
    for key in ("public", "private", "presence", "other"):
        assert held["names"][key] in channels, body


def test_channels_info_presence_prefix_user_count(crier, held):
    body = sdk(crier).channels_info(prefix_filter="presence-", attributes=["user_count"])
    assert all(name.startswith("presence-") for name in body["channels"]), body
    assert body["channels"][held["names"]["presence"]]["user_count"] == 2, body


def test_channel_info_occupied_and_counts(crier, held):
    client = sdk(crier)
    public = client.channel_info(held["names"]["public"], ["subscription_count"])
    assert public["occupied"] is True, public
    assert public["subscription_count"] == 3, public
    presence = client.channel_info(held["names"]["presence"], ["user_count"])
    assert presence["occupied"] is True and presence["user_count"] == 2, presence
    empty = client.channel_info("py-never-used-" + uuid.uuid4().hex[:8])
    assert empty == {"occupied": False}, empty


def test_users_info_lists_each_presence_user_once(crier, held):
    body = sdk(crier).users_info(held["names"]["presence"])
    assert sorted(u["id"] for u in body["users"]) == ["py-1", "py-2"], body


def test_users_info_on_public_channel_is_bad_request(crier, held):
    with pytest.raises(PusherBadRequest):
        sdk(crier).users_info(held["names"]["public"])


def test_trigger_reaches_pusher_js(crier, held):
    name = held["names"]["public"]
    result = sdk(crier).trigger(name, "py-greeting", {"text": "from python", "n": 3})
    assert result == {}, result
    for i in range(3):
        _, msg = wait_event(held, lambda m, i=i: m["event"] == "py-greeting" and m["client"] == i, "py-greeting on client %d" % i)
        assert msg["channel"] == name
        assert msg["data"] == {"text": "from python", "n": 3}


def test_trigger_to_several_channels(crier, held):
    names = held["names"]
    sdk(crier).trigger([names["private"], names["other"]], "py-multi", {"k": 1})
    _, a = wait_event(held, lambda m: m["event"] == "py-multi" and m["client"] == 0, "py-multi on client 0")
    _, b = wait_event(held, lambda m: m["event"] == "py-multi" and m["client"] == 2, "py-multi on client 2")
    assert a["channel"] == names["private"] and b["channel"] == names["other"]
    # Client 1 is on neither channel.
    seen = sentinel(sdk(crier), held, names["public"], 1)
    assert [m for m in seen if m["event"] == "py-multi"] == [], seen


def test_trigger_with_socket_id_excludes_that_socket(crier, held):
    client = sdk(crier)
    name = held["names"]["public"]
    client.trigger(name, "py-to-others", {"x": 1}, socket_id=held["socket_ids"][0])
    for i in (1, 2):
        wait_event(held, lambda m, i=i: m["event"] == "py-to-others" and m["client"] == i, "py-to-others on client %d" % i)
    seen = sentinel(client, held, name, 0)
    assert [m for m in seen if m["event"] == "py-to-others"] == [], seen


def test_trigger_batch_keeps_order(crier, held):
    name = held["names"]["other"]
    batch = [{"channel": name, "name": "py-seq", "data": json.dumps({"i": i})} for i in range(10)]
    assert sdk(crier).trigger_batch(batch, already_encoded=True) == {}
    wait_event(held, lambda m: m["event"] == "py-seq" and m["client"] == 2 and m["data"]["i"] == 9, "the last py-seq")
    seq = [m["data"]["i"] for m in events_between(held, 0, len(held["lines"].all)) if m["event"] == "py-seq"]
    assert seq == list(range(10))


def test_wrong_secret_is_401(crier, held):
    bad = sdk(crier, secret="wrong-secret")
    with pytest.raises(PusherBadAuth):
        bad.trigger(held["names"]["public"], "py-nope", {})
    with pytest.raises(PusherBadAuth):
        bad.channels_info()
    with pytest.raises(PusherBadAuth):
        bad.users_info(held["names"]["presence"])


def test_wrong_secret_publishes_nothing(crier, held):
    name = held["names"]["other"]
    with pytest.raises(PusherBadAuth):
        sdk(crier, secret="wrong-secret").trigger(name, "py-forged", {})
    seen = sentinel(sdk(crier), held, name, 2)
    assert [m for m in seen if m["event"] == "py-forged"] == [], seen
