//! Webhooks on a single node: which events are sent and when (occupied at once, vacated and
//! member_removed only after the delay and not at all when the channel or user is back in
//! time, client events, cache misses, subscription counts), how targets filter them, how they
//! are signed, batched and retried (error answers, refused connections, timeouts, given up
//! after `retry_for`), that a stuck receiver never slows the WebSocket or HTTP API paths,
//! and the binary's configuration (file, environment, HTTPS with the system's roots).
//!
//! Every request is checked by the receiver (method, content type, key, HMAC signature of
//! the body, body shape); one invalid request fails the test.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::webhook_receiver::{
    Answer, CrierProcess, Event, TempFile, WebhookReceiver, show, wall_ms,
};
use common::*;
use crier::config::{KindSet, WebhookEntry, WebhookFilter, WebhookSettings, WebhookTarget};
use serde_json::{Value, json};

/// The debounce of channel_vacated and member_removed in these tests.
const DELAY: Duration = Duration::from_millis(600);
/// How long a webhook that should come is awaited (beyond any delay it has).
const ARRIVAL: Duration = Duration::from_secs(5);
/// How long to watch for webhooks that must not come (longer than DELAY plus a batch).
const SETTLE: Duration = Duration::from_millis(1500);

fn settings() -> WebhookSettings {
    WebhookSettings {
        delay: DELAY,
        batch_window: Duration::from_millis(50),
        max_batch_events: 50,
        timeout: Duration::from_secs(1),
        retry_first: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        retry_for: Duration::from_secs(60),
        ..WebhookSettings::default()
    }
}

/// A target taking every event of every channel.
fn all_events(url: String) -> WebhookTarget {
    WebhookTarget {
        url,
        kinds: KindSet::ALL,
        channel_prefix: None,
        channel_suffix: None,
        headers: vec![],
    }
}

/// A target taking only the named event types (and, with `prefix`, only those channels).
fn only(url: String, kinds: &[&str], prefix: Option<&str>) -> WebhookTarget {
    WebhookEntry {
        url: Some(url),
        event_types: Some(kinds.iter().map(|k| k.to_string()).collect()),
        channel_prefix: prefix.map(str::to_string),
        ..Default::default()
    }
    .check()
    .expect("a valid webhook target")
}

fn config_with(targets: Vec<WebhookTarget>, webhooks: WebhookSettings) -> Config {
    let mut config = test_config();
    config.apps[0].webhooks = targets;
    config.webhooks = webhooks;
    config
}

/// A server of the default app sending its webhooks to `targets`, with [`settings`].
async fn server_with(targets: Vec<WebhookTarget>) -> Server {
    Server::start(config_with(targets, settings())).await
}

/// A receiver for the default app.
async fn receiver() -> WebhookReceiver {
    WebhookReceiver::start(APP_KEY, APP_SECRET).await
}

fn occupied(channel: &str) -> Value {
    json!({"name": "channel_occupied", "channel": channel})
}

fn vacated(channel: &str) -> Value {
    json!({"name": "channel_vacated", "channel": channel})
}

fn member_added(channel: &str, user: &str) -> Value {
    json!({"name": "member_added", "channel": channel, "user_id": user})
}

fn member_removed(channel: &str, user: &str) -> Value {
    json!({"name": "member_removed", "channel": channel, "user_id": user})
}

/// Events about `channel`, each as its JSON, in arrival order (every attempt counted).
fn about(receiver: &WebhookReceiver, channel: &str) -> Vec<Value> {
    receiver
        .events_where(|e| e.channel() == channel && e.name() != "subscription_count")
        .into_iter()
        .map(|e| e.json)
        .collect()
}

/// Whether `e` is an occupancy or membership event about `channel`.
fn is_occupancy(e: &Event, channel: &str) -> bool {
    e.channel() == channel && e.name() != "subscription_count"
}

/// Subscribes a private channel and reads the success frame.
async fn join_private(client: &mut Client, channel: &str) {
    client.subscribe_private(channel).await;
}

// ---------------------------------------------------------------------------------------------
// Occupancy
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn channel_occupied_is_sent_once_when_the_first_subscriber_joins() {
    let receiver = receiver().await;
    let server = server_with(vec![all_events(receiver.url())]).await;
    let mut clients = Vec::new();
    for prefix in ["public-", "private-", "presence-"] {
        let channel = fresh_channel(prefix);
        let before = wall_ms();
        let mut first = server.client().await;
        match prefix {
            "private-" => join_private(&mut first, &channel).await,
            "presence-" => {
                first.subscribe_presence(&channel, "ann", json!({})).await;
            }
            _ => first.subscribe(&channel).await,
        }
        let event = receiver
            .wait_for("channel_occupied", &channel, ARRIVAL)
            .await;
        assert_eq!(event.json, occupied(&channel), "{event}");
        // time_ms is when the webhook was made: after the subscription began, before it
        // arrived.
        let request = &receiver.requests()[event.request];
        assert!(
            before <= event.time_ms && event.time_ms <= request.received_ms,
            "time_ms {} not within [{before}, {}]",
            event.time_ms,
            request.received_ms
        );
        // A second subscriber of an occupied channel changes nothing.
        let mut second = server.client().await;
        match prefix {
            "private-" => join_private(&mut second, &channel).await,
            "presence-" => {
                second.subscribe_presence(&channel, "bob", json!({})).await;
            }
            _ => second.subscribe(&channel).await,
        }
        receiver
            .expect_no_more(
                |e| e.name() == "channel_occupied" || e.name() == "channel_vacated",
                Duration::from_millis(400),
            )
            .await;
        clients.push(first);
        clients.push(second);
        assert_eq!(
            receiver.events_of("channel_occupied", &channel).len(),
            1,
            "{}",
            show(&receiver.events())
        );
    }
}

#[tokio::test]
async fn channel_vacated_is_sent_once_after_the_delay_when_the_last_subscriber_leaves() {
    let receiver = receiver().await;
    let server = server_with(vec![all_events(receiver.url())]).await;
    let channel = fresh_channel("vacated-");
    let mut first = server.client().await;
    let mut second = server.client().await;
    first.subscribe(&channel).await;
    second.subscribe(&channel).await;
    receiver
        .wait_for("channel_occupied", &channel, ARRIVAL)
        .await;

    // One subscriber of two leaves: still occupied.
    first.unsubscribe(&channel).await;
    first.assert_alive().await;
    receiver
        .expect_no_more(|e| e.is("channel_vacated", &channel), SETTLE)
        .await;

    // The last one goes (its connection closes): vacated, but only after the delay.
    let left = Instant::now();
    drop(second);
    let event = receiver
        .wait_for("channel_vacated", &channel, DELAY + ARRIVAL)
        .await;
    assert_eq!(event.json, vacated(&channel));
    let waited = event.at.duration_since(left);
    assert!(
        waited >= DELAY.mul_f32(0.9),
        "channel_vacated came {waited:?} after the last subscriber left; the delay is {DELAY:?}"
    );
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), SETTLE)
        .await;
    assert_eq!(
        about(&receiver, &channel),
        [occupied(&channel), vacated(&channel)]
    );
}

#[tokio::test]
async fn a_page_reload_within_the_delay_sends_neither_vacated_nor_occupied() {
    let receiver = receiver().await;
    let server = server_with(vec![all_events(receiver.url())]).await;
    let channel = fresh_channel("private-reload-");
    let mut page = server.client().await;
    join_private(&mut page, &channel).await;
    receiver
        .wait_for("channel_occupied", &channel, ARRIVAL)
        .await;

    // The page reloads: its socket closes, a new one subscribes again at once.
    drop(page);
    let mut reloaded = server.client().await;
    join_private(&mut reloaded, &channel).await;
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), DELAY + SETTLE)
        .await;
    assert_eq!(about(&receiver, &channel), [occupied(&channel)]);

    // Leaving for good (by unsubscribing) is announced, once.
    reloaded.unsubscribe(&channel).await;
    receiver
        .wait_for("channel_vacated", &channel, DELAY + ARRIVAL)
        .await;
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), SETTLE)
        .await;
    assert_eq!(
        about(&receiver, &channel),
        [occupied(&channel), vacated(&channel)]
    );
}

// ---------------------------------------------------------------------------------------------
// Presence members
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn member_added_once_per_user_and_member_removed_after_their_last_socket_and_the_delay() {
    let receiver = receiver().await;
    let server = server_with(vec![all_events(receiver.url())]).await;
    let channel = fresh_channel("presence-members-");
    let mut ann = server.client().await;
    ann.subscribe_presence(&channel, "ann", json!({"name": "Ann"}))
        .await;
    let event = receiver.wait_for("member_added", &channel, ARRIVAL).await;
    assert_eq!(event.json, member_added(&channel, "ann"));

    // Ann's second socket is not a new member; Bob is.
    let mut ann_again = server.client().await;
    ann_again
        .subscribe_presence(&channel, "ann", json!({"name": "Ann"}))
        .await;
    let mut bob = server.client().await;
    bob.subscribe_presence(&channel, "bob", json!({})).await;
    receiver
        .wait_for_event(|e| e.json == member_added(&channel, "bob"), ARRIVAL)
        .await;

    // Ann's first socket leaves: she is still there.
    drop(ann);
    receiver
        .expect_no_more(|e| e.name() == "member_removed", SETTLE)
        .await;

    // Her last socket leaves: removed, after the delay.
    let left = Instant::now();
    ann_again.unsubscribe(&channel).await;
    let event = receiver
        .wait_for("member_removed", &channel, DELAY + ARRIVAL)
        .await;
    assert_eq!(event.json, member_removed(&channel, "ann"));
    let waited = event.at.duration_since(left);
    assert!(
        waited >= DELAY.mul_f32(0.9),
        "member_removed came {waited:?} after the user's last socket left; delay {DELAY:?}"
    );
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), SETTLE)
        .await;
    let members: Vec<Value> = about(&receiver, &channel)
        .into_iter()
        .filter(|e| e["name"] == "member_added" || e["name"] == "member_removed")
        .collect();
    assert_eq!(
        members,
        [
            member_added(&channel, "ann"),
            member_added(&channel, "bob"),
            member_removed(&channel, "ann")
        ]
    );
    // Bob keeps the channel occupied: never vacated.
    assert!(receiver.events_of("channel_vacated", &channel).is_empty());
    drop(bob);
}

#[tokio::test]
async fn a_member_back_within_the_delay_sends_neither_removed_nor_added() {
    let receiver = receiver().await;
    let server = server_with(vec![all_events(receiver.url())]).await;
    let channel = fresh_channel("presence-back-");
    let mut stays = server.client().await;
    stays.subscribe_presence(&channel, "stays", json!({})).await;
    let mut ann = server.client().await;
    ann.subscribe_presence(&channel, "ann", json!({})).await;
    receiver
        .wait_for_event(|e| e.json == member_added(&channel, "ann"), ARRIVAL)
        .await;

    drop(ann);
    let mut ann = server.client().await;
    ann.subscribe_presence(&channel, "ann", json!({})).await;
    receiver
        .expect_no_more(|e| is_occupancy(e, &channel), DELAY + SETTLE)
        .await;
    let ann_events = receiver.events_where(|e| e.json["user_id"] == "ann");
    assert_eq!(ann_events.len(), 1, "{}", show(&ann_events));
    drop(ann);
    receiver
        .wait_for_event(
            |e| e.json == member_removed(&channel, "ann"),
            DELAY + ARRIVAL,
        )
        .await;
}

// ---------------------------------------------------------------------------------------------
// Client events
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_events_are_sent_with_their_socket_id_and_data_as_a_string() {
    let receiver = receiver().await;
    let server = server_with(vec![only(receiver.url(), &["client_event"], None)]).await;
    let channel = fresh_channel("private-whisper-");
    let mut sender = server.client().await;
    let mut listener = server.client().await;
    join_private(&mut sender, &channel).await;
    join_private(&mut listener, &channel).await;

    // A string is sent as it is.
    let text = "{\"already\":\"encoded\"}";
    let frame = json!({"event": "client-text", "channel": channel, "data": text});
    sender.send_json(&frame).await;
    listener.expect_json(&frame).await;
    let event = receiver.wait_for("client_event", &channel, ARRIVAL).await;
    assert_eq!(
        event.json,
        json!({
            "name": "client_event",
            "channel": channel,
            "event": "client-text",
            "data": text,
            "socket_id": sender.socket_id,
        })
    );

    // Any other value as its JSON text.
    let value = json!({"who": "ann", "n": [1, 2.5, null], "ok": true});
    let frame = json!({"event": "client-typing", "channel": channel, "data": value});
    sender.send_json(&frame).await;
    listener.expect_json(&frame).await;
    let event = receiver
        .wait_for_event(|e| e.json["event"] == "client-typing", ARRIVAL)
        .await;
    let data = event.json["data"]
        .as_str()
        .unwrap_or_else(|| panic!("data must be a string: {event}"));
    let parsed: Value = serde_json::from_str(data)
        .unwrap_or_else(|e| panic!("data must be the value's JSON text: {e}: {event}"));
    assert_eq!(parsed, value, "{event}");
    let mut rest = event.json.clone();
    rest.as_object_mut().expect("an object").remove("data");
    assert_eq!(
        rest,
        json!({
            "name": "client_event",
            "channel": channel,
            "event": "client-typing",
            "socket_id": sender.socket_id,
        })
    );
    // A number too.
    let frame = json!({"event": "client-number", "channel": channel, "data": 42});
    sender.send_json(&frame).await;
    listener.expect_json(&frame).await;
    let event = receiver
        .wait_for_event(|e| e.json["event"] == "client-number", ARRIVAL)
        .await;
    assert_eq!(event.json["data"], "42", "{event}");
    receiver
        .expect_no_more(|_| true, Duration::from_millis(500))
        .await;
    assert_eq!(receiver.events().len(), 3, "{}", show(&receiver.events()));
}

#[tokio::test]
async fn client_events_on_presence_channels_carry_the_user_id() {
    let receiver = receiver().await;
    let server = server_with(vec![only(receiver.url(), &["client_event"], None)]).await;
    let channel = fresh_channel("presence-whisper-");
    let mut sender = server.client().await;
    let mut listener = server.client().await;
    sender
        .subscribe_presence(&channel, "ann", json!({"name": "Ann"}))
        .await;
    listener
        .subscribe_presence(&channel, "bob", json!({}))
        .await;
    // Bob's arrival is announced to Ann.
    let added = sender.recv_json().await;
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");

    let frame = json!({"event": "client-hello", "channel": channel, "data": "hi"});
    sender.send_json(&frame).await;
    let got = listener.recv_json().await;
    assert_eq!(got["event"], "client-hello", "{got}");
    let event = receiver.wait_for("client_event", &channel, ARRIVAL).await;
    assert_eq!(
        event.json,
        json!({
            "name": "client_event",
            "channel": channel,
            "event": "client-hello",
            "data": "hi",
            "socket_id": sender.socket_id,
            "user_id": "ann",
        })
    );
}

#[tokio::test]
async fn refused_client_events_send_no_webhook() {
    let receiver = receiver().await;
    let mut config = config_with(
        vec![only(receiver.url(), &["client_event"], None)],
        settings(),
    );
    config.apps[0].client_events_per_second = 2;
    let server = Server::start(config).await;
    let public = fresh_channel("public-");
    let private = fresh_channel("private-");
    let mut client = server.client().await;
    client.subscribe(&public).await;
    // On a public channel.
    client
        .send_json(&json!({"event": "client-x", "channel": public, "data": "1"}))
        .await;
    client.expect_pusher_error().await;
    // On a channel the socket is not subscribed to.
    client
        .send_json(&json!({"event": "client-x", "channel": private, "data": "2"}))
        .await;
    client.expect_pusher_error().await;
    // Over the rate limit: the accepted ones are sent, the refused ones are not.
    join_private(&mut client, &private).await;
    let mut listener = server.client().await;
    join_private(&mut listener, &private).await;
    for i in 0..6 {
        client
            .send_json(&json!({"event": "client-burst", "channel": private, "data": i.to_string()}))
            .await;
    }
    let mut delivered = Vec::new();
    while let Next::Frame(message) = listener.next_within(Duration::from_millis(500)).await {
        let frame: Value =
            serde_json::from_str(message.to_text().unwrap_or("")).unwrap_or_default();
        if frame["event"] == "client-burst" {
            delivered.push(frame["data"].as_str().unwrap_or("").to_string());
        }
    }
    assert!(
        !delivered.is_empty() && delivered.len() < 6,
        "the rate limit should let some through: {delivered:?}"
    );
    receiver
        .wait_for_count(|e| e.name() == "client_event", delivered.len(), ARRIVAL)
        .await;
    receiver
        .expect_no_more(|_| true, Duration::from_millis(700))
        .await;
    let sent: Vec<String> = receiver
        .events()
        .iter()
        .map(|e| e.json["data"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(sent, delivered, "{}", show(&receiver.events()));
}

// ---------------------------------------------------------------------------------------------
// Cache misses and subscription counts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cache_miss_is_sent_once_per_channel_when_nothing_is_cached() {
    let receiver = receiver().await;
    let server = server_with(vec![only(receiver.url(), &["cache_miss"], None)]).await;
    let mut client = server.client().await;
    for prefix in ["cache-", "private-cache-", "presence-cache-"] {
        let channel = fresh_channel(prefix);
        match prefix {
            "presence-cache-" => {
                client.subscribe_presence(&channel, "ann", json!({})).await;
            }
            "private-cache-" => join_private(&mut client, &channel).await,
            _ => client.subscribe(&channel).await,
        }
        client
            .expect_json(&json!({"event": "pusher:cache_miss", "channel": channel}))
            .await;
        let event = receiver.wait_for("cache_miss", &channel, ARRIVAL).await;
        assert_eq!(
            event.json,
            json!({"name": "cache_miss", "channel": channel})
        );
    }
    // A second miss on the same channel right after is not sent again.
    let channel = fresh_channel("cache-again-");
    client.subscribe(&channel).await;
    receiver.wait_for("cache_miss", &channel, ARRIVAL).await;
    let mut other = server.client().await;
    other.subscribe(&channel).await;
    other
        .expect_json(&json!({"event": "pusher:cache_miss", "channel": channel}))
        .await;
    // Once something is cached, a new subscriber gets it and no miss is reported.
    let cached = fresh_channel("cache-full-");
    server.api().publish(&cached, "e", "last").await;
    let mut third = server.client().await;
    third.subscribe(&cached).await;
    third
        .expect_json(&json!({"event": "e", "channel": cached, "data": "last"}))
        .await;
    // Channels that are not cache channels never miss.
    third.subscribe(&fresh_channel("plain-")).await;
    receiver
        .expect_no_more(|_| true, Duration::from_millis(800))
        .await;
    assert_eq!(
        receiver.events_of("cache_miss", &channel).len(),
        1,
        "{}",
        show(&receiver.events())
    );
    assert!(receiver.events_of("cache_miss", &cached).is_empty());
    assert_eq!(receiver.events().len(), 4, "{}", show(&receiver.events()));
}

/// The last subscription_count reported for `channel` (awaited until it is `n`).
async fn wait_for_count(receiver: &WebhookReceiver, channel: &str, n: u64) {
    let events = receiver
        .wait_for_events(
            |events| {
                events
                    .iter()
                    .rev()
                    .find(|e| e.is("subscription_count", channel))
                    .is_some_and(|e| e.json["subscription_count"] == n)
            },
            ARRIVAL,
        )
        .await;
    for e in events
        .iter()
        .filter(|e| e.is("subscription_count", channel))
    {
        let count = e.json["subscription_count"].as_u64();
        assert!(count.is_some(), "subscription_count must be a number: {e}");
        assert_eq!(
            e.json,
            json!({"name": "subscription_count", "channel": channel, "subscription_count": count}),
            "{e}"
        );
    }
}

#[tokio::test]
async fn subscription_count_reports_a_channel_s_new_count() {
    let receiver = receiver().await;
    let server = server_with(vec![only(receiver.url(), &["subscription_count"], None)]).await;
    let channel = fresh_channel("counted-");
    let mut clients = Vec::new();
    let mut one = server.client().await;
    one.subscribe(&channel).await;
    wait_for_count(&receiver, &channel, 1).await;
    for _ in 0..2 {
        let mut client = server.client().await;
        client.subscribe(&channel).await;
        clients.push(client);
    }
    wait_for_count(&receiver, &channel, 3).await;
    one.unsubscribe(&channel).await;
    wait_for_count(&receiver, &channel, 2).await;
    // Private channels are counted too; presence channels are not (members are).
    let private = fresh_channel("private-counted-");
    join_private(&mut one, &private).await;
    wait_for_count(&receiver, &private, 1).await;
    let presence = fresh_channel("presence-counted-");
    one.subscribe_presence(&presence, "ann", json!({})).await;
    let mut bob = server.client().await;
    bob.subscribe_presence(&presence, "bob", json!({})).await;
    receiver
        .expect_no_more(|e| e.channel() == presence, SETTLE)
        .await;
    assert!(
        receiver
            .events_where(|e| e.channel() == presence)
            .is_empty(),
        "{}",
        show(&receiver.events())
    );
}

// ---------------------------------------------------------------------------------------------
// Targets: filters, apps, headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn event_types_and_channel_prefix_choose_what_each_target_gets() {
    let receiver = receiver().await;
    let occupancy = receiver.url_with_path("/occupancy");
    let presence = receiver.url_with_path("/presence");
    let server = server_with(vec![
        only(occupancy, &["channel_occupied", "channel_vacated"], None),
        WebhookEntry {
            url: Some(presence),
            channel_prefix: Some("presence-".into()),
            ..Default::default()
        }
        .check()
        .expect("a valid target"),
    ])
    .await;
    let public = fresh_channel("public-");
    let room = fresh_channel("presence-room-");
    let mut client = server.client().await;
    client.subscribe(&public).await;
    client.subscribe_presence(&room, "ann", json!({})).await;
    receiver
        .wait_for_events(
            |events| {
                events
                    .iter()
                    .any(|e| e.path == "/occupancy" && e.is("channel_occupied", &room))
                    && events
                        .iter()
                        .any(|e| e.path == "/occupancy" && e.is("channel_occupied", &public))
                    && events
                        .iter()
                        .any(|e| e.path == "/presence" && e.is("member_added", &room))
                    && events
                        .iter()
                        .any(|e| e.path == "/presence" && e.is("channel_occupied", &room))
            },
            ARRIVAL,
        )
        .await;
    receiver
        .expect_no_more(
            |e| e.name() != "subscription_count",
            Duration::from_millis(500),
        )
        .await;
    for e in receiver.events() {
        match e.path.as_str() {
            "/occupancy" => assert!(
                e.name() == "channel_occupied" || e.name() == "channel_vacated",
                "the occupancy target takes no {e}"
            ),
            "/presence" => assert!(
                e.channel().starts_with("presence-"),
                "the presence target takes no {e}"
            ),
            other => panic!("unknown path {other}: {e}"),
        }
    }
    let key = |e: &Event| (e.path.clone(), e.json.clone());
    let mut got: Vec<_> = receiver
        .events_where(|e| e.name() != "subscription_count")
        .iter()
        .map(key)
        .collect();
    got.sort_by_key(|(p, j)| format!("{p} {j}"));
    let mut expected = vec![
        ("/occupancy".to_string(), occupied(&public)),
        ("/occupancy".to_string(), occupied(&room)),
        ("/presence".to_string(), occupied(&room)),
        ("/presence".to_string(), member_added(&room, "ann")),
    ];
    expected.sort_by_key(|(p, j)| format!("{p} {j}"));
    assert_eq!(got, expected);
}

#[tokio::test]
async fn each_app_signs_with_its_own_secret_and_sends_to_its_own_targets() {
    let first = receiver().await;
    let second = WebhookReceiver::start("second-key", "second-secret").await;
    let mut config = config_with(vec![all_events(first.url())], settings());
    let mut other = config.apps[0].clone();
    other.id = "2".into();
    other.key = "second-key".into();
    other.secret = "second-secret".into();
    other.webhooks = vec![all_events(second.url())];
    config.apps.push(other);
    let server = Server::start(config).await;
    let channel = fresh_channel("shared-name-");
    let mut on_first = server.client().await;
    on_first.subscribe(&channel).await;
    let mut on_second = Client::connect_app(server.addr, "second-key", "second-secret").await;
    on_second.subscribe(&channel).await;
    first.wait_for("channel_occupied", &channel, ARRIVAL).await;
    second.wait_for("channel_occupied", &channel, ARRIVAL).await;
    first
        .expect_no_more(|e| e.name() == "channel_occupied", SETTLE)
        .await;
    assert_eq!(first.events_of("channel_occupied", &channel).len(), 1);
    assert_eq!(second.events_of("channel_occupied", &channel).len(), 1);
    // Both receivers check key and signature on every request (and on drop).
    first.assert_all_valid();
    second.assert_all_valid();
}

#[tokio::test]
async fn a_target_s_extra_headers_are_sent_and_its_channel_suffix_filters() {
    let receiver = receiver().await;
    let target = WebhookEntry {
        url: Some(receiver.url()),
        event_types: Some(vec!["channel_occupied".into()]),
        filter: Some(WebhookFilter {
            channel_name_starts_with: None,
            channel_name_ends_with: Some("-hooked".into()),
        }),
        headers: Some(BTreeMap::from([(
            "X-Token".to_string(),
            "t0ken".to_string(),
        )])),
        ..Default::default()
    }
    .check()
    .expect("a valid target");
    let server = server_with(vec![target]).await;
    let hooked = format!("{}-hooked", fresh_channel("a-"));
    let ignored = fresh_channel("a-");
    let mut client = server.client().await;
    client.subscribe(&ignored).await;
    client.subscribe(&hooked).await;
    let event = receiver
        .wait_for("channel_occupied", &hooked, ARRIVAL)
        .await;
    let request = &receiver.requests()[event.request];
    assert_eq!(request.header("x-token"), Some("t0ken"), "{request}");
    receiver
        .expect_no_more(|_| true, Duration::from_millis(500))
        .await;
    assert!(receiver.events_of("channel_occupied", &ignored).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Batching
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn events_close_together_share_requests_of_at_most_max_batch_events() {
    const MAX: usize = 8;
    let receiver = receiver().await;
    let webhooks = WebhookSettings {
        batch_window: Duration::from_millis(200),
        max_batch_events: MAX,
        ..settings()
    };
    let server = Server::start(config_with(
        vec![only(receiver.url(), &["channel_occupied"], None)],
        webhooks,
    ))
    .await;
    let channels: Vec<String> = (0..20).map(|_| fresh_channel("batched-")).collect();
    let mut client = server.client().await;
    // Twenty subscriptions at once, then their twenty acknowledgements.
    for channel in &channels {
        client.send_subscribe(channel, "", None).await;
    }
    for _ in &channels {
        let frame = client.recv_json().await;
        assert_eq!(
            frame["event"], "pusher_internal:subscription_succeeded",
            "{frame}"
        );
    }
    receiver
        .wait_for_count(|e| e.name() == "channel_occupied", 20, ARRIVAL)
        .await;
    receiver
        .expect_no_more(|_| true, Duration::from_millis(500))
        .await;
    let requests = receiver.requests();
    let sizes: Vec<usize> = requests.iter().map(|r| r.events.len()).collect();
    assert!(
        requests.len() < 20,
        "20 events close together took {} requests: {sizes:?}",
        requests.len()
    );
    assert!(
        sizes.iter().all(|&n| n <= MAX),
        "a request held more than max_batch_events = {MAX}: {sizes:?}"
    );
    let mut names: Vec<String> = receiver
        .events()
        .iter()
        .map(|e| e.channel().to_string())
        .collect();
    names.sort();
    let mut expected = channels.clone();
    expected.sort();
    assert_eq!(names, expected, "each channel exactly once");
}

// ---------------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------------

/// Asserts that every request is the same webhook: the same body bytes (so the same
/// `time_ms`) and signature.
fn assert_same_webhook(requests: &[common::webhook_receiver::Request]) {
    let first = &requests[0];
    for r in &requests[1..] {
        assert_eq!(
            r.body, first.body,
            "a retry must send the same body: #{} {first} vs {r}",
            first.index
        );
        assert_eq!(
            r.header("x-pusher-signature"),
            first.header("x-pusher-signature")
        );
    }
}

#[tokio::test]
async fn an_error_answer_is_retried_with_the_same_body_until_a_2xx() {
    let receiver = receiver().await;
    receiver.fail_next(500, 1);
    receiver.fail_next(404, 1);
    let server = server_with(vec![only(receiver.url(), &["channel_occupied"], None)]).await;
    let channel = fresh_channel("retried-");
    let mut client = server.client().await;
    client.subscribe(&channel).await;
    let requests = receiver.wait_for_requests(|r| r.len() >= 3, ARRIVAL).await;
    let answers: Vec<Answer> = requests.iter().map(|r| r.answer).collect();
    assert_eq!(
        answers,
        [
            Answer::Status(500),
            Answer::Status(404),
            Answer::Status(200)
        ]
    );
    assert_same_webhook(&requests);
    assert_eq!(requests[0].events, [occupied(&channel)]);
    // Backoff: at least about retry_first between attempts, more the second time.
    let first_gap = requests[1].at.duration_since(requests[0].at);
    let second_gap = requests[2].at.duration_since(requests[1].at);
    let retry_first = settings().retry_first;
    assert!(
        first_gap >= retry_first.mul_f32(0.5) && second_gap >= retry_first,
        "retries came after {first_gap:?} and {second_gap:?}; retry_first {retry_first:?}"
    );
    // Answered: never sent again.
    receiver.expect_no_requests(settings().retry_max * 3).await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_receiver_listens() {
    let mut receiver = WebhookReceiver::reserve(APP_KEY, APP_SECRET);
    let server = server_with(vec![only(receiver.url(), &["channel_occupied"], None)]).await;
    let channel = fresh_channel("refused-");
    let before = wall_ms();
    let mut client = server.client().await;
    client.subscribe(&channel).await;
    // Several attempts are refused meanwhile (retry_first 100 ms); nothing to observe.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let listening = wall_ms();
    receiver.listen().await;
    let event = receiver
        .wait_for("channel_occupied", &channel, ARRIVAL)
        .await;
    assert!(
        before <= event.time_ms && event.time_ms <= listening,
        "time_ms {} must be the creation time, within [{before}, {listening}]",
        event.time_ms
    );
    receiver.expect_no_requests(settings().retry_max * 3).await;
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn a_receiver_that_does_not_answer_in_time_gets_the_webhook_again() {
    let receiver = receiver().await;
    receiver.hang_next(1);
    let server = server_with(vec![only(receiver.url(), &["channel_occupied"], None)]).await;
    let channel = fresh_channel("timed-out-");
    let mut client = server.client().await;
    client.subscribe(&channel).await;
    let timeout = settings().timeout;
    let requests = receiver
        .wait_for_requests(|r| r.len() >= 2, timeout + ARRIVAL)
        .await;
    assert_eq!(requests[0].answer, Answer::Hang);
    assert_eq!(requests[1].answer, Answer::Status(200));
    assert_same_webhook(&requests[..2]);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(
        gap >= timeout.mul_f32(0.9),
        "the retry came {gap:?} after the first attempt, before its {timeout:?} timeout"
    );
    receiver.expect_no_requests(settings().retry_max * 3).await;
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn a_webhook_still_failing_after_retry_for_is_given_up() {
    let receiver = receiver().await;
    receiver.answer_always(Answer::Status(503));
    let retry_for = Duration::from_secs(2);
    let webhooks = WebhookSettings {
        retry_for,
        retry_max: Duration::from_millis(300),
        ..settings()
    };
    let server = Server::start(config_with(
        vec![only(receiver.url(), &["channel_occupied"], None)],
        webhooks.clone(),
    ))
    .await;
    let channel = fresh_channel("given-up-");
    let mut client = server.client().await;
    client.subscribe(&channel).await;
    let first = receiver.wait_for_requests(|r| !r.is_empty(), ARRIVAL).await;
    let created = first[0].time_ms;
    // Past retry_for (and one more attempt's timeout and pause), nothing more comes.
    let done = retry_for + webhooks.timeout + webhooks.retry_max;
    let elapsed = Duration::from_millis(wall_ms().saturating_sub(created));
    tokio::time::sleep(done.saturating_sub(elapsed)).await;
    receiver
        .expect_no_requests(Duration::from_millis(1500))
        .await;
    let requests = receiver.requests();
    assert!(
        requests.len() >= 3,
        "expected several attempts within retry_for, got {}",
        requests.len()
    );
    assert_same_webhook(&requests);
    let last = requests.last().expect("a request");
    assert!(
        last.received_ms <= created + (retry_for + Duration::from_millis(500)).as_millis() as u64,
        "an attempt {} ms after time_ms, past retry_for {retry_for:?}",
        last.received_ms - created
    );
    // The target is not stuck: a new webhook goes through once the receiver answers.
    receiver.answer_ok();
    let next = fresh_channel("after-giving-up-");
    client.subscribe(&next).await;
    receiver.wait_for("channel_occupied", &next, ARRIVAL).await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_slow_publishes_or_subscriptions() {
    let receiver = receiver().await;
    receiver.hang_forever();
    let webhooks = WebhookSettings {
        timeout: Duration::from_secs(4),
        ..settings()
    };
    let mut config = config_with(vec![all_events(receiver.url())], webhooks);
    config.apps[0].client_events_per_second = 0;
    let server = Server::start(config).await;
    // Plenty of webhooks, all stuck.
    let mut busy = server.client().await;
    for _ in 0..30 {
        busy.subscribe(&fresh_channel("stuck-")).await;
    }
    receiver.wait_for_requests(|r| !r.is_empty(), ARRIVAL).await;

    let started = Instant::now();
    let channel = fresh_channel("private-still-fast-");
    let mut listener = server.client().await;
    join_private(&mut listener, &channel).await;
    let mut sender = server.client().await;
    join_private(&mut sender, &channel).await;
    let api = server.api();
    for i in 0..20 {
        api.publish(&channel, "tick", &i.to_string()).await;
        let frame = listener.recv_json_within(Duration::from_secs(2)).await;
        assert_eq!(
            frame,
            json!({"event": "tick", "channel": channel, "data": i.to_string()})
        );
        let whisper = json!({"event": "client-w", "channel": channel, "data": i.to_string()});
        sender.send_json(&whisper).await;
        listener.expect_json(&whisper).await;
        let mut newcomer = server.client().await;
        newcomer.subscribe(&fresh_channel("new-")).await;
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "20 rounds of publish, client event and subscription took {took:?} with a stuck receiver"
    );
    let info = api.get(&format!("/channels/{channel}"), &[]).await;
    assert_eq!(info.ok()["occupied"], true);
}

// ---------------------------------------------------------------------------------------------
// The binary: config file, environment, HTTPS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_binary_takes_targets_and_settings_from_its_config_file() {
    let receiver = WebhookReceiver::start("file-key", "file-secret").await;
    let file = TempFile::new(
        ".toml",
        &format!(
            r#"
[webhooks]
delay_ms = 300
batch_window_ms = 20
max_batch_events = 10
timeout_ms = 1000
retry_first_ms = 100
retry_max_ms = 400
retry_for_secs = 30
queue_events = 1000
concurrency = 2

[[apps]]
id = "7"
key = "file-key"
secret = "file-secret"

[[apps.webhooks]]
url = "{members}"
event_types = ["member_added", "member_removed"]
channel_prefix = "presence-"

[[apps.webhooks]]
url = "{occupancy}"
event_types = ["channel_occupied", "channel_vacated"]
"#,
            members = receiver.url_with_path("/members"),
            occupancy = receiver.url_with_path("/occupancy"),
        ),
    );
    let path = file.0.to_string_lossy().to_string();
    let crier = CrierProcess::start(&["--config", &path], &[]);
    let channel = fresh_channel("presence-file-");
    let mut ann = Client::connect_app(crier.addr, "file-key", "file-secret").await;
    ann.subscribe_presence(&channel, "ann", json!({})).await;
    receiver
        .wait_for_event(
            |e| e.path == "/members" && e.json == member_added(&channel, "ann"),
            ARRIVAL,
        )
        .await;
    receiver
        .wait_for_event(
            |e| e.path == "/occupancy" && e.json == occupied(&channel),
            ARRIVAL,
        )
        .await;
    // delay_ms = 300: both leave events well before the default 3 s.
    let left = Instant::now();
    drop(ann);
    let events = receiver
        .wait_for_events(
            |events| {
                events
                    .iter()
                    .any(|e| e.json == member_removed(&channel, "ann"))
                    && events.iter().any(|e| e.json == vacated(&channel))
            },
            Duration::from_millis(2500),
        )
        .await;
    assert!(left.elapsed() < Duration::from_millis(2500));
    for e in &events {
        match e.path.as_str() {
            "/members" => assert!(e.name().starts_with("member_"), "{e}"),
            "/occupancy" => assert!(e.name().starts_with("channel_"), "{e}"),
            _ => panic!("unexpected {e}"),
        }
    }
}

#[tokio::test]
async fn the_binary_takes_webhooks_from_the_environment_and_trusts_system_roots_over_https() {
    let receiver = WebhookReceiver::start_tls(APP_KEY, APP_SECRET).await;
    let targets =
        json!([{"url": receiver.url(), "event_types": ["channel_occupied", "channel_vacated"]}])
            .to_string();
    let cert = receiver.cert_path().to_string_lossy().to_string();
    let crier = CrierProcess::start(
        &[],
        &[
            ("CRIER_APP_WEBHOOKS", &targets),
            ("SSL_CERT_FILE", &cert),
            ("CRIER_WEBHOOK_DELAY_MS", "300"),
            ("CRIER_WEBHOOK_BATCH_WINDOW_MS", "20"),
            ("CRIER_WEBHOOK_TIMEOUT_MS", "2000"),
            ("CRIER_WEBHOOK_RETRY_FIRST_MS", "100"),
            ("CRIER_WEBHOOK_RETRY_FOR", "30"),
        ],
    );
    let channel = fresh_channel("private-tls-");
    let mut client = Client::connect(crier.addr).await;
    join_private(&mut client, &channel).await;
    let event = receiver
        .wait_for("channel_occupied", &channel, ARRIVAL)
        .await;
    assert_eq!(event.json, occupied(&channel));
    let left = Instant::now();
    drop(client);
    receiver
        .wait_for("channel_vacated", &channel, Duration::from_millis(2500))
        .await;
    assert!(
        left.elapsed() < Duration::from_millis(2500),
        "CRIER_WEBHOOK_DELAY_MS=300 not applied"
    );
    receiver
        .expect_no_more(|_| true, Duration::from_millis(500))
        .await;
    assert_eq!(
        about(&receiver, &channel),
        [occupied(&channel), vacated(&channel)]
    );
}

// ---------------------------------------------------------------------------------------------
// The receiver itself
// ---------------------------------------------------------------------------------------------

/// Posts `body` to the receiver with the given signature and content type.
async fn post_to(receiver: &WebhookReceiver, body: &str, signature: &str, content_type: &str) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", receiver.port()))
        .await
        .expect("connect to the receiver");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
    tokio::spawn(connection);
    let request = hyper::Request::post("/webhook")
        .header("host", "127.0.0.1")
        .header("content-type", content_type)
        .header("x-pusher-key", APP_KEY)
        .header("x-pusher-signature", signature)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .expect("a request");
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_receiver_accepts_only_signed_well_formed_webhooks() {
    let receiver = receiver().await;
    let body = r#"{"time_ms":1,"events":[{"name":"channel_occupied","channel":"c"}]}"#;
    let good = hmac_hex(APP_SECRET, body);
    post_to(&receiver, body, &good, "application/json").await;
    receiver.assert_all_valid();
    assert_eq!(receiver.events().len(), 1);
    for (body, signature, content_type) in [
        (body, hmac_hex("wrong-secret", body), "application/json"),
        (body, good.to_uppercase(), "application/json"),
        (body, good.clone(), "application/json; charset=utf-8"),
        (
            r#"{"time_ms":1,"events":[]}"#,
            String::new(),
            "application/json",
        ),
        (
            r#"{"time_ms":1.5,"events":[{"name":"x"}]}"#,
            String::new(),
            "application/json",
        ),
        (
            r#"{"events":[{"channel":"c"}]}"#,
            String::new(),
            "application/json",
        ),
    ] {
        let signature = if signature.is_empty() {
            hmac_hex(APP_SECRET, body)
        } else {
            signature
        };
        post_to(&receiver, body, &signature, content_type).await;
        let failed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| receiver.assert_all_valid()));
        assert!(
            failed.is_err(),
            "accepted {body} signed {signature} as {content_type}"
        );
        receiver.clear();
    }
}

#[tokio::test]
async fn a_reload_sends_to_the_new_targets_from_then_on() {
    let receiver = WebhookReceiver::start("reload-key", "reload-secret").await;
    let config = |path: &str| {
        format!(
            r#"
[server]
metrics_port = 0

[webhooks]
batch_window_ms = 10

[[apps]]
id = "8"
key = "reload-key"
secret = "reload-secret"

[[apps.webhooks]]
url = "{}"
event_types = ["channel_occupied"]
"#,
            receiver.url_with_path(path)
        )
    };
    let file = TempFile::new(".toml", &config("/before"));
    let path = file.0.to_string_lossy().to_string();
    let crier = CrierProcess::start(&["--config", &path], &[]);
    let first = fresh_channel("reload-first-");
    let mut client = Client::connect_app(crier.addr, "reload-key", "reload-secret").await;
    client.subscribe(&first).await;
    receiver
        .wait_for_event(
            |e| e.path == "/before" && e.json == occupied(&first),
            ARRIVAL,
        )
        .await;

    std::fs::write(&file.0, config("/after")).expect("rewrite the config");
    crier.reload().await;
    let second = fresh_channel("reload-second-");
    client.subscribe(&second).await;
    receiver
        .wait_for_event(
            |e| e.path == "/after" && e.json == occupied(&second),
            ARRIVAL,
        )
        .await;
    let to_old = receiver.events_where(|e| e.path == "/before" && e.json == occupied(&second));
    assert!(to_old.is_empty(), "{}", show(&to_old));
}

#[tokio::test]
async fn a_reload_gives_a_node_started_without_targets_its_first_one() {
    let receiver = WebhookReceiver::start("first-key", "first-secret").await;
    let app = "[server]\nmetrics_port = 0\n\n[[apps]]\nid = \"9\"\nkey = \"first-key\"\nsecret = \"first-secret\"\n";
    let file = TempFile::new(".toml", app);
    let path = file.0.to_string_lossy().to_string();
    let crier = CrierProcess::start(&["--config", &path], &[]);
    let with_target = format!(
        "{app}\n[[apps.webhooks]]\nurl = \"{}\"\nevent_types = [\"channel_occupied\"]\n",
        receiver.url_with_path("/first")
    );
    std::fs::write(&file.0, with_target).expect("rewrite the config");
    crier.reload().await;
    let channel = fresh_channel("first-target-");
    let mut client = Client::connect_app(crier.addr, "first-key", "first-secret").await;
    client.subscribe(&channel).await;
    receiver
        .wait_for_event(
            |e| e.path == "/first" && e.json == occupied(&channel),
            ARRIVAL,
        )
        .await;
}
